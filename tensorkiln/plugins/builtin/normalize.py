"""Normalize (SSD): L2 normalization across channels (per position) or across the whole sample, then a
learned scale per channel or shared by all channels."""
from __future__ import annotations

import dataclasses

import torch

from ..base import Plugin, expect_inputs
from ..registry import register_plugin


@register_plugin("Normalize")
class Normalize(Plugin):
    """inputs: x [N, C, ...], optional scale ([1] when channel_shared, else [C]); output like x."""

    @dataclasses.dataclass(frozen=True)
    class Params:
        across_spatial: bool = True  # one norm over C x H x W per sample; else one per position over C
        channel_shared: bool = True
        eps: float = 1e-10  # added to the sum of squares before the square root, as Caffe

    def output_specs(self, inputs):
        expect_inputs(self, inputs, (1, 2))
        x = inputs[0]
        if len(x.shape) < 2:
            raise ValueError(f"Normalize needs an input of rank 2 or more, got shape {x.shape}")
        if len(inputs) == 2 and inputs[1] is not None:
            expected = 1 if self.params.channel_shared else x.shape[1]
            count = 1
            for d in inputs[1].shape:
                count *= d
            if count != expected:
                raise ValueError(f"Normalize scale has shape {inputs[1].shape}; channel_shared="
                                 f"{self.params.channel_shared} needs {expected} values")
        return [x]

    def forward(self, inputs):
        x = inputs[0]
        dims = tuple(range(1, x.dim())) if self.params.across_spatial else (1,)
        y = x / torch.sqrt((x * x).sum(dim=dims, keepdim=True) + self.params.eps)
        scale = inputs[1] if len(inputs) > 1 else None
        if scale is not None:
            shape = () if self.params.channel_shared else (-1,) + (1,) * (x.dim() - 2)
            y = y * scale.reshape(shape)
        return [y]
