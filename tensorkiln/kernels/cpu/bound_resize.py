"""A bound Resize: torch's own interpolation where its coordinates are ONNX's, instead of the kernel's index_select per
axis (which on NHWC activations writes NCHW results slowly, and leaves the next layers a layout to convert).

Served: spatial-only resizes (batch and channels kept) of floating tensors, either
- nearest, `asymmetric` coordinates, `floor` rounding, integer scales (out = in * scale): the source of output i is
  floor(i / scale), which is torch's nearest for those sizes (PP-OCR det's 2x, 4x and 8x upsampling: 21 -> 0.5 ms); or
- linear, `half_pixel` (or `pytorch_half_pixel` with outputs longer than 1), the scale exactly out / in: torch's
  bilinear/linear/trilinear with align_corners=False computes src = (i + 0.5) * in / out - 0.5 as ONNX does, and its
  clamping at the edges gives ONNX's edge values.
Everything else runs the kernel (kernels/cpu/resize.py).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import ResizeMode
from .bound import BoundInput, binder

_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _scales(x: BoundInput, op: ops.Resize) -> list[float] | None:
    """The spatial scales, where batch and channels are kept and the sizes are static; else None."""
    shape, out = tuple(x.shape), tuple(op.output_shape)
    if len(shape) not in (3, 4, 5) or len(out) != len(shape) or min(shape) <= 0 or shape[:2] != out[:2]:
        return None
    if len(op.scales) != len(shape) or any(s != 1.0 for s in op.scales[:2]):
        return None
    return list(op.scales[2:])


@binder(ops.Resize)
def bind_resize(op: ops.Resize, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    x = inputs[0]
    if x is None or not x.dtype.is_floating_point or len(inputs) > 1 and any(t is not None for t in inputs[1:]):
        return None
    scales = _scales(x, op)
    if scales is None or op.roi:
        return None
    size, spatial = tuple(op.output_shape[2:]), tuple(x.shape[2:])
    if (op.mode is ResizeMode.NEAREST and op.coordinate_transformation == "asymmetric"
            and op.nearest_mode == "floor"
            and all(s == int(s) and s >= 1 and n * int(s) == o for s, n, o in zip(scales, spatial, size))):
        return lambda args: [F.interpolate(args[0], size=size, mode="nearest")]
    half_pixel = op.coordinate_transformation == "half_pixel" or (
        op.coordinate_transformation == "pytorch_half_pixel" and min(size) > 1)
    if (op.mode is ResizeMode.LINEAR and half_pixel and not op.exclude_outside
            and all(s == o / n for s, n, o in zip(scales, spatial, size))):
        mode = _LINEAR[len(size)]
        return lambda args: [F.interpolate(args[0], size=size, mode=mode, align_corners=False)]
    return None
