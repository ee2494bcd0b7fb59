"""Grid sampling, determinants, and linear quantization."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel


@kernel(ops.GridSample)
def grid_sample(op: ops.GridSample, inputs):
    x, grid = inputs
    return [F.grid_sample(x, grid.to(x.dtype), op.mode, op.padding_mode, op.align_corners)]


@kernel(ops.Determinant)
def determinant(op, inputs):
    return [torch.linalg.det(inputs[0])]


def _per_axis(value: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """A per-axis scale or zero point, shaped to broadcast along `axis` of x (a scalar stays as is)."""
    if value.dim() == 0 or value.numel() == 1:
        return value.reshape(())
    if value.dim() == x.dim():  # blocked quantization: already full rank
        return value
    axis = axis % x.dim()
    return value.reshape((-1,) + (1,) * (x.dim() - axis - 1))


@kernel(ops.QuantizeLinear)
def quantize_linear(op: ops.QuantizeLinear, inputs):
    x, scale, zero_point = (list(inputs) + [None])[:3]
    target = op.output_dtype.torch
    info = torch.iinfo(target)
    y = torch.round(x.float() / _per_axis(scale, x, op.axis).float())  # half to even, as ONNX
    if zero_point is not None:
        y = y + _per_axis(zero_point, x, op.axis).float()
    return [torch.clamp(y, info.min, info.max).to(target)]


@kernel(ops.DequantizeLinear)
def dequantize_linear(op: ops.DequantizeLinear, inputs):
    x, scale, zero_point = (list(inputs) + [None])[:3]
    y = x.float()
    if zero_point is not None:
        y = y - _per_axis(zero_point, x, op.axis).float()
    return [(y * _per_axis(scale, x, op.axis).float()).to(scale.dtype)]
