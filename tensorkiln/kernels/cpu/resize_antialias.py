"""Antialiased Resize (linear and cubic): each output position is a normalized weighted sum over a window of
input positions whose width grows with the downsampling factor; applied one axis at a time as a matrix."""
from __future__ import annotations

import math

import torch

from ...ir import ops
from ...ir.ops import ResizeMode
from ..registry import kernel
from .resize import _source_coordinates


def _cubic(d: torch.Tensor, a: float) -> torch.Tensor:
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _axis_weights(op: ops.ResizeAntialias, axis: int, in_len: int, out_len: int) -> torch.Tensor:
    """[out_len, in_len] interpolation matrix of one axis (float64)."""
    coords = _source_coordinates(op, axis, in_len, out_len, "cpu").double()
    scale = min(op.scales[axis], 1.0)  # the filter only widens when downsampling
    support = 1.0 if op.mode is ResizeMode.LINEAR else 2.0
    start = math.floor(-support / scale) + 1
    taps = 2 - 2 * start
    base = torch.floor(coords)
    # ratio in (0, 1]: an exact integer position counts as the right end of its left pixel's interval
    ratio = torch.where(coords == base, torch.ones_like(coords), coords - base)
    offsets = torch.arange(start, start + taps, dtype=torch.float64)
    distance = (offsets.reshape(1, -1) - ratio.reshape(-1, 1)) * scale  # [out, taps]
    if op.mode is ResizeMode.LINEAR:
        weights = (1 - distance.abs()).clamp(0, 1)
    else:
        weights = _cubic(distance, op.cubic_coeff_a)
    weights = weights / weights.sum(dim=1, keepdim=True)
    first = base - taps // 2 + torch.where(coords == base, 0.0, 1.0)
    index = (first.reshape(-1, 1) + torch.arange(taps, dtype=torch.float64)).long()  # [out, taps]
    if op.exclude_outside:
        weights = torch.where((index < 0) | (index >= in_len), torch.zeros_like(weights), weights)
        total = weights.sum(dim=1, keepdim=True)
        weights = weights / torch.where(total == 0, torch.ones_like(total), total)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, index.clamp(0, in_len - 1), weights)  # out-of-range taps repeat the edge pixel
    if op.coordinate_transformation == "tf_crop_and_resize":
        matrix[(coords < 0) | (coords > in_len - 1)] = 0
    return matrix


@kernel(ops.ResizeAntialias)
def resize_antialias(op: ops.ResizeAntialias, inputs):
    x = inputs[0]
    if x.device.type == "meta":
        return [torch.empty(op.output_shape, dtype=x.dtype, device="meta")]
    y = x.double()
    for axis in range(x.dim()):
        if y.shape[axis] == op.output_shape[axis] and op.scales[axis] == 1.0:
            continue
        matrix = _axis_weights(op, axis, y.shape[axis], op.output_shape[axis]).to(y.device)
        y = torch.movedim(torch.tensordot(matrix, torch.movedim(y, axis, 0), dims=1), 0, axis)
        if op.coordinate_transformation == "tf_crop_and_resize":
            coords = _source_coordinates(op, axis, x.shape[axis], op.output_shape[axis], "cpu")
            outside = ((coords < 0) | (coords > x.shape[axis] - 1)).reshape(
                [-1 if d == axis else 1 for d in range(y.dim())]).to(y.device)
            y = torch.where(outside, torch.full_like(y, op.extrapolation_value), y)
    return [y.to(x.dtype)]
