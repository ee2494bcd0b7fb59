"""PriorBox (SSD): the default boxes of one feature map, as Caffe-SSD's PriorBoxLayer lays them out.

Output [1, 2, H * W * num_priors * 4]: channel 0 holds (xmin, ymin, xmax, ymax) of every prior normalized by
the image size, position by position (row-major), then prior by prior; channel 1 the four variances of each.
The priors at each position, per min_size: the square box of min_size, the square of sqrt(min_size *
max_size) if max sizes are given, then one box per aspect ratio other than 1.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ...ir.dtypes import DataType
from ..base import Plugin, TensorDesc, expect_inputs
from ..registry import register_plugin


@register_plugin("PriorBox")
class PriorBox(Plugin):
    """inputs: feature map [N, C, H, W], image [N, C, IH, IW] (only the shapes are read)."""

    @dataclasses.dataclass(frozen=True)
    class Params:
        min_sizes: tuple[float, ...]
        max_sizes: tuple[float, ...] = ()  # none, or one per min size
        aspect_ratios: tuple[float, ...] = ()  # besides 1; duplicates are ignored
        flip: bool = True  # add 1/r for every aspect ratio r
        clip: bool = False  # clamp the normalized coordinates into [0, 1]
        variances: tuple[float, ...] = (0.1,)  # one for all four coordinates, or four
        img_h: int = 0  # 0: the height of the image input
        img_w: int = 0
        step_h: float = 0.0  # 0: image height / feature map height
        step_w: float = 0.0
        offset: float = 0.5  # of the box centers within their cell

    def __init__(self, params):
        super().__init__(params)
        p = params
        if not p.min_sizes or any(s <= 0 for s in p.min_sizes):
            raise ValueError(f"PriorBox needs positive min_sizes, got {p.min_sizes}")
        if p.max_sizes and (len(p.max_sizes) != len(p.min_sizes)
                            or any(M <= m for m, M in zip(p.min_sizes, p.max_sizes))):
            raise ValueError(f"PriorBox max_sizes {p.max_sizes} must pair with min_sizes {p.min_sizes}, each larger")
        if len(p.variances) not in (1, 4) or any(v <= 0 for v in p.variances):
            raise ValueError(f"PriorBox takes one or four positive variances, got {p.variances}")
        self.box_sizes = _box_sizes(p)

    @property
    def num_priors(self) -> int:
        return len(self.box_sizes)

    def output_specs(self, inputs):
        expect_inputs(self, inputs, (2,))
        feature, image = inputs
        if len(feature.shape) != 4 or len(image.shape) != 4:
            raise ValueError(f"PriorBox takes 4-d inputs, got shapes {feature.shape} and {image.shape}")
        height, width = feature.shape[2:]
        return [TensorDesc((1, 2, height * width * self.num_priors * 4), DataType.FLOAT)]

    def forward(self, inputs):
        feature, image = inputs
        p = self.params
        height, width = feature.shape[2:]
        img_h, img_w = (p.img_h, p.img_w) if p.img_h and p.img_w else tuple(image.shape[2:])
        step_h, step_w = (p.step_h, p.step_w) if p.step_h and p.step_w else (img_h / height, img_w / width)
        f64 = dict(dtype=torch.float64, device=feature.device)
        center_y = ((torch.arange(height, **f64) + p.offset) * step_h).reshape(height, 1, 1)
        center_x = ((torch.arange(width, **f64) + p.offset) * step_w).reshape(1, width, 1)
        sizes = torch.tensor(self.box_sizes, **f64)  # [P, 2]: width, height
        half_w, half_h = sizes[:, 0] / 2, sizes[:, 1] / 2
        shape = (height, width, self.num_priors)
        boxes = torch.stack([((center_x - half_w) / img_w).expand(shape), ((center_y - half_h) / img_h).expand(shape),
                             ((center_x + half_w) / img_w).expand(shape), ((center_y + half_h) / img_h).expand(shape)],
                            dim=-1).reshape(-1)
        if p.clip:
            boxes = boxes.clamp(0.0, 1.0)
        variances = torch.tensor(p.variances * (4 // len(p.variances)), **f64).repeat(boxes.numel() // 4)
        return [torch.stack([boxes, variances]).to(torch.float32).unsqueeze(0)]


def _box_sizes(p) -> list[tuple[float, float]]:
    """(width, height) of the priors at one position, in Caffe-SSD's order."""
    ratios = [1.0]
    for ratio in p.aspect_ratios:
        for candidate in (ratio, 1.0 / ratio) if p.flip else (ratio,):
            if all(abs(candidate - r) >= 1e-6 for r in ratios):
                ratios.append(candidate)
    sizes = []
    for index, min_size in enumerate(p.min_sizes):
        sizes.append((min_size, min_size))
        if p.max_sizes:
            side = math.sqrt(min_size * p.max_sizes[index])
            sizes.append((side, side))
        sizes.extend((min_size * math.sqrt(r), min_size / math.sqrt(r)) for r in ratios[1:])
    return sizes
