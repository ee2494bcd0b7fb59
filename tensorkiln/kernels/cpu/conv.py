"""Convolution and deconvolution (1D, 2D, 3D; groups, dilation, asymmetric padding)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def split_pads(pads: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    half = len(pads) // 2
    return pads[:half], pads[half:]


def torch_pad_arg(begin: tuple[int, ...], end: tuple[int, ...]) -> list[int]:
    """ONNX-order pads of the trailing dims -> F.pad's last-dim-first pairs."""
    result: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        result += [b, e]
    return result


@kernel(ops.Convolution)
def convolution(op: ops.Convolution, inputs):
    x, weight, bias = (list(inputs) + [None])[:3]
    begin, end = split_pads(op.pads)
    padding: tuple[int, ...] | int = begin
    if begin != end:  # torch pads symmetrically; pad explicitly first
        x = F.pad(x, torch_pad_arg(begin, end))
        padding = 0
    conv = _CONV[x.dim() - 2]
    return [conv(x, weight, bias, op.stride, padding, op.dilation, op.groups)]


@kernel(ops.Deconvolution)
def deconvolution(op: ops.Deconvolution, inputs):
    x, weight, bias = (list(inputs) + [None])[:3]
    spatial = x.dim() - 2
    begin, end = split_pads(op.pads)
    # Full transposed convolution, then output padding at the end, then crop the pads: this handles
    # asymmetric pads and any output_padding (torch limits output_padding to < stride otherwise).
    y = _DECONV[spatial](x, weight, None, op.stride, 0, 0, op.groups, op.dilation)
    if any(op.output_padding):
        y = F.pad(y, torch_pad_arg((0,) * spatial, op.output_padding))
    index = [slice(None), slice(None)]
    for dim, (b, e) in enumerate(zip(begin, end)):
        index.append(slice(b, y.shape[2 + dim] - e))
    y = y[tuple(index)]
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * spatial)
    return [y]
