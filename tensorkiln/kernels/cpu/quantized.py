"""DynamicQuantizeLinear, QLinearMatMul and QLinearConv. Integer accumulations are done in float64, which holds
every int32 sum of 8-bit products exactly (and CPU convolutions have no integer kernels)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel

_RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _centered(q: torch.Tensor, zero_point: torch.Tensor | None, shape=None) -> torch.Tensor:
    q = q.double()
    if zero_point is None:
        return q
    zero_point = zero_point.double()
    return q - (zero_point.reshape(shape) if shape is not None and zero_point.numel() > 1 else zero_point)


def _requantize(accumulated: torch.Tensor, factor: torch.Tensor, zero_point, like: torch.Tensor) -> torch.Tensor:
    dtype = like.dtype if zero_point is None else zero_point.dtype
    y = accumulated * factor.double()
    if zero_point is not None:
        y = y + zero_point.double()
    low, high = _RANGES[dtype]
    return torch.round(y).clamp(low, high).to(dtype)  # torch.round: half to even, as ONNX


@kernel(ops.DynamicQuantizeLinear)
def dynamic_quantize_linear(op, inputs):
    x = inputs[0].float()
    if x.device.type == "meta":
        return [torch.empty(x.shape, dtype=torch.uint8, device="meta"), torch.empty((), device="meta"),
                torch.empty((), dtype=torch.uint8, device="meta")]
    high, low = x.max().clamp(min=0), x.min().clamp(max=0)  # the range always holds zero
    scale = torch.where(high == low, torch.ones_like(high), high - low) / 255
    zero_point = torch.round((0 - low / scale).clamp(0, 255))
    y = torch.round(x / scale) + zero_point
    return [y.clamp(0, 255).to(torch.uint8), scale.to(inputs[0].dtype), zero_point.to(torch.uint8)]


@kernel(ops.QLinearMatMul)
def qlinear_matmul(op, inputs):
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = inputs
    # a's scale and zero point may be per row, b's per column
    accumulated = torch.matmul(_centered(a, a_zero, (-1, 1)), _centered(b, b_zero))
    a_scale = a_scale.reshape(-1, 1) if a_scale.numel() > 1 else a_scale
    factor = a_scale * b_scale / y_scale  # in the scales' dtype, as the ONNX reference rounds it
    return [_requantize(accumulated, factor, y_zero, a)]


@kernel(ops.QLinearConv)
def qlinear_conv(op: ops.QLinearConv, inputs):
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, bias = (list(inputs) + [None])[:9]
    spatial = x.dim() - 2
    per_channel = (-1,) + (1,) * (w.dim() - 1)
    begin, end = op.pads[:spatial], op.pads[spatial:]
    padding = [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]
    centered = F.pad(_centered(x, x_zero), padding)  # pad with the zero point: centered zeros
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    accumulated = conv(centered, _centered(w, w_zero, per_channel), None if bias is None else bias.double(),
                       stride=op.stride, dilation=op.dilation, groups=op.groups)
    w_scale = w_scale.reshape((1, -1) + (1,) * spatial) if w_scale.numel() > 1 else w_scale
    return [_requantize(accumulated, x_scale * w_scale / y_scale, y_zero, x)]
