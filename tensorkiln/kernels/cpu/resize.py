"""Resize (nearest, linear, cubic) with every ONNX coordinate transformation, one axis at a time."""
from __future__ import annotations

import torch

from ...ir import ops
from ...ir.ops import ResizeMode
from ..registry import kernel


def _source_coordinates(op: ops.Resize, axis: int, in_len: int, out_len: int, device) -> torch.Tensor:
    """x_original for every output position along `axis` (ONNX Resize's coordinate transformation)."""
    x = torch.arange(out_len, device=device, dtype=torch.float32)
    scale = op.scales[axis]
    mode = op.coordinate_transformation
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(x)
    # align_corners and tf_crop_and_resize use the unrounded output length (scale * in_len), as ONNX does: with
    # scales that do not divide the input, floor(scale * in_len) would move every sample
    length = scale * in_len
    if mode == "align_corners":
        return x * ((in_len - 1) / (length - 1)) if length != 1 else torch.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        rank = len(op.scales)
        start, end = op.roi[axis], op.roi[rank + axis]
        if length != 1:
            return start * (in_len - 1) + x * ((end - start) * (in_len - 1) / (length - 1))
        return torch.full_like(x, 0.5 * (start + end) * (in_len - 1))
    raise ValueError(f"unknown coordinate transformation mode {mode!r}")


def _nearest_index(coords: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "round_prefer_floor":
        index = torch.ceil(coords - 0.5)
    elif mode == "round_prefer_ceil":
        index = torch.floor(coords + 0.5)
    elif mode == "floor":
        index = torch.floor(coords)
    elif mode == "ceil":
        index = torch.ceil(coords)
    else:
        raise ValueError(f"unknown nearest mode {mode!r}")
    return index.long()


def _cubic_weights(t: torch.Tensor, a: float) -> list[torch.Tensor]:
    """Keys' cubic convolution weights of the neighbours at offsets -1, 0, 1, 2 from floor(x)."""
    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _resize_axis(x: torch.Tensor, op: ops.Resize, axis: int) -> torch.Tensor:
    in_len, out_len = x.shape[axis], op.output_shape[axis]
    coords = _source_coordinates(op, axis, in_len, out_len, x.device)
    shape = [1] * x.dim()
    shape[axis] = out_len
    if op.mode is ResizeMode.NEAREST:
        index = _nearest_index(coords, op.nearest_mode).clamp(0, in_len - 1)
        result = torch.index_select(x, axis, index)
    else:
        base = torch.floor(coords)
        t = coords - base
        offsets = (0, 1) if op.mode is ResizeMode.LINEAR else (-1, 0, 1, 2)
        weights = [1 - t, t] if op.mode is ResizeMode.LINEAR else _cubic_weights(t, op.cubic_coeff_a)
        if op.exclude_outside:
            inside = [((base + o) >= 0) & ((base + o) <= in_len - 1) for o in offsets]
            weights = [w * m for w, m in zip(weights, inside)]
            total = sum(weights)
            weights = [w / total for w in weights]
        result = None
        for offset, weight in zip(offsets, weights):
            index = (base.long() + offset).clamp(0, in_len - 1)
            term = torch.index_select(x, axis, index) * weight.to(x.dtype).reshape(shape)
            result = term if result is None else result + term
    if op.coordinate_transformation == "tf_crop_and_resize":
        outside = ((coords < 0) | (coords > in_len - 1)).reshape(shape)
        result = torch.where(outside, torch.full_like(result, op.extrapolation_value), result)
    return result


@kernel(ops.Resize)
def resize(op: ops.Resize, inputs):
    x = inputs[0]
    dtype = x.dtype
    interpolated = op.mode is not ResizeMode.NEAREST and not x.is_floating_point()
    if interpolated:  # integers (uint8 images) are interpolated in float32, then rounded and saturated, as ONNX's
        x = x.float()  # reference does; weights cast to an integer type would be 0 or 1
    for axis in range(x.dim()):
        identity = x.shape[axis] == op.output_shape[axis] and op.scales[axis] == 1.0
        if not identity or op.coordinate_transformation == "tf_crop_and_resize":
            x = _resize_axis(x, op, axis)
    if interpolated:
        info = torch.iinfo(dtype)
        x = torch.round(x).clamp(info.min, info.max).to(dtype)
    return [x]
