"""Pooling (max, average, LP; ceil mode, asymmetric pads, dilation), global pooling and LRN."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import PoolingType
from ..registry import kernel
from .conv import _CONV, split_pads, torch_pad_arg

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def pooled_size(size: int, kernel_size: int, stride: int, begin: int, end: int, dilation: int, ceil: bool) -> int:
    """Output length of one spatial dim, as ONNX and Caffe define it (a ceil-mode window that would
    start inside the end padding is dropped)."""
    span = dilation * (kernel_size - 1) + 1
    numerator = size + begin + end - span
    out = (math.ceil if ceil else math.floor)(numerator / stride) + 1
    if ceil and (out - 1) * stride >= size + begin:
        out -= 1
    return max(out, 0)


def _padded_extents(op: ops.Pooling, spatial_shape) -> tuple[list[int], list[int]]:
    """Begin pads and end pads that make a floor-mode, unpadded pooling give the ONNX output size.

    The end pad may be larger than the declared one (ceil mode overhang) or smaller (crop)."""
    begin, end = split_pads(op.pads)
    ends = []
    for i, size in enumerate(spatial_shape):
        out = pooled_size(size, op.kernel[i], op.stride[i], begin[i], end[i], op.dilation[i], op.ceil_mode)
        needed = (out - 1) * op.stride[i] + op.dilation[i] * (op.kernel[i] - 1) + 1
        ends.append(needed - size - begin[i])
    return list(begin), ends


def _window_sum(x, op: ops.Pooling):
    """Sum over each pooling window of an already padded tensor, as a depthwise convolution."""
    channels, spatial = x.shape[1], x.dim() - 2
    ones = torch.ones((channels, 1) + tuple(op.kernel), dtype=x.dtype, device=x.device)
    return _CONV[spatial](x, ones, None, op.stride, 0, op.dilation, channels)


@kernel(ops.Pooling)
def pooling(op: ops.Pooling, inputs):
    x = inputs[0]
    spatial = x.dim() - 2
    begin, ends = _padded_extents(op, x.shape[2:])
    pad_arg = torch_pad_arg(tuple(begin), tuple(ends))
    if op.type is PoolingType.MAX:
        fill = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
        padded = F.pad(x, pad_arg, value=fill)
        return [_MAX_POOL[spatial](padded, op.kernel, op.stride, 0, op.dilation)]
    if op.type is PoolingType.LP:
        powered = F.pad(x.abs() ** op.p, pad_arg)
        return [_window_sum(powered, op) ** (1.0 / op.p)]
    total = _window_sum(F.pad(x, pad_arg), op)
    # Divisor per window: count input cells, plus declared pads when count_include_pad; never the
    # ceil-mode overhang beyond the declared pads.
    declared_begin, declared_end = split_pads(op.pads)
    mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    if op.count_include_pad:
        mask = F.pad(mask, torch_pad_arg(declared_begin, declared_end), value=1.0)
        extra = [e - d for e, d in zip(ends, declared_end)]
        mask = F.pad(mask, torch_pad_arg((0,) * spatial, tuple(extra)))
    else:
        mask = F.pad(mask, pad_arg)
    ones = torch.ones((1, 1) + tuple(op.kernel), dtype=x.dtype, device=x.device)
    count = _CONV[spatial](mask, ones, None, op.stride, 0, op.dilation)
    return [total / count]


@kernel(ops.GlobalPooling)
def global_pooling(op: ops.GlobalPooling, inputs):
    x = inputs[0]
    dims = tuple(range(2, x.dim()))
    if op.type is PoolingType.MAX:
        return [torch.amax(x, dim=dims, keepdim=True)]
    if op.type is PoolingType.LP:
        return [torch.sum(x.abs() ** op.p, dim=dims, keepdim=True) ** (1.0 / op.p)]
    return [torch.mean(x, dim=dims, keepdim=True)]


@kernel(ops.LRN)
def lrn(op: ops.LRN, inputs):
    x = inputs[0]
    # Sum of squares over a window of `size` channels: floor((size-1)/2) before, ceil((size-1)/2) after.
    before, after = (op.size - 1) // 2, op.size - 1 - (op.size - 1) // 2
    squares = (x * x).unsqueeze(1)  # [N, 1, C, *spatial]
    pad = [0, 0] * (x.dim() - 2) + [before, after]
    padded = F.pad(squares, pad)
    windows = padded.unfold(2, op.size, 1).sum(-1).squeeze(1)
    return [x / (op.bias + op.alpha / op.size * windows) ** op.beta]
