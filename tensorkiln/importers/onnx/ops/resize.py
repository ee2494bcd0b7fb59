"""Resize (opset 10 to 19) and Upsample (opset 7 to 9)."""
from __future__ import annotations

import math

import numpy as np

from ....ir import ops
from ....ir.ops import ResizeMode
from ..registry import converter

_MODES = {"nearest": ResizeMode.NEAREST, "linear": ResizeMode.LINEAR, "bilinear": ResizeMode.LINEAR,
          "cubic": ResizeMode.CUBIC}


def _scales_and_sizes(ctx, node, x):
    rank = len(x.shape)
    if ctx.opset < 11:  # Resize-10: X, scales
        return [float(s) for s in ctx.require_constant(node, 1, "scales").reshape(-1)], None, []
    roi = ctx.constant(node, 1)
    if ctx.attr(node, "coordinate_transformation_mode") == "tf_crop_and_resize":  # only this mode reads the roi
        roi = ctx.require_constant(node, 1, "roi")
    roi = [] if roi is None else [float(v) for v in roi.reshape(-1)]
    scales = ctx.require_constant(node, 2, "scales").reshape(-1) if ctx.input(node, 2) is not None else None
    sizes = ctx.ints(node, 3, "sizes") if ctx.input(node, 3) is not None else None
    if scales is not None and scales.size == 0:
        scales = None
    axes = ctx.attr(node, "axes")
    if axes is not None:  # opset 18: scales/sizes/roi given for these axes only
        if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
            raise ctx.error(node, f"axes {list(axes)} are not distinct axes of the rank-{rank} input")
        given = sizes if sizes is not None else scales
        if given is not None and len(given) != len(axes):
            raise ctx.error(node, f"gives {len(given)} scales or sizes for the {len(axes)} axes {list(axes)}")
        axes = [a % rank for a in axes]
        if scales is not None:
            full = [1.0] * rank
            for a, s in zip(axes, scales):
                full[a] = float(s)
            scales = full
        if sizes is not None:
            full_sizes = list(x.shape)
            for a, s in zip(axes, sizes):
                full_sizes[a] = s
            sizes = full_sizes
        if roi:
            full_roi = [0.0] * rank + [1.0] * rank
            for i, a in enumerate(axes):
                full_roi[a], full_roi[rank + a] = roi[i], roi[len(axes) + i]
            roi = full_roi
    return (None if scales is None else [float(s) for s in scales]), sizes, roi


@converter("Resize", "Upsample")
def resize(ctx, node):
    x = ctx.input(node, 0)
    rank = len(x.shape)
    if node.op_type == "Upsample":
        scales = ctx.attr(node, "scales") if ctx.opset < 9 else ctx.require_constant(node, 1, "scales")
        scales, sizes, roi = [float(s) for s in np.asarray(scales).reshape(-1)], None, []
    else:
        scales, sizes, roi = _scales_and_sizes(ctx, node, x)
    if scales is None and sizes is None:
        raise ctx.error(node, "has neither scales nor sizes; one of them says how large the output is")
    given, what = (sizes, "sizes") if sizes is not None else (scales, "scales")
    if len(given) != rank:
        raise ctx.error(node, f"{what} {list(given)} has {len(given)} values for an input of rank {rank}; it needs one "
                              "per dimension (or the axes attribute naming the ones it gives)")
    if sizes is None and not all(math.isfinite(s) and s > 0 for s in scales):
        raise ctx.error(node, f"scales {scales} must be positive and finite")
    if sizes is not None:
        sizes, scales = _keep_aspect_ratio(ctx, node, x.shape, sizes)
    else:  # also for tf_crop_and_resize: onnxruntime and the ONNX reference size it floor(d * s), whatever the roi
        sizes = [int(math.floor(d * s)) for d, s in zip(x.shape, scales)]
    if ctx.attr(node, "antialias", 0) and ctx.attr(node, "mode", "nearest") != "nearest":
        return [_antialias(ctx, node, x, sizes, scales, roi)]
    legacy = node.op_type == "Upsample" or ctx.opset < 11
    default_transform = "asymmetric" if legacy else "half_pixel"
    op = ops.Resize(
        ctx.choice(node, "mode", "nearest", _MODES), tuple(sizes), tuple(scales),
        ctx.attr(node, "coordinate_transformation_mode", default_transform),
        "floor" if legacy else ctx.attr(node, "nearest_mode", "round_prefer_floor"),
        float(ctx.attr(node, "cubic_coeff_a", -0.75)), bool(ctx.attr(node, "exclude_outside", 0)),
        float(ctx.attr(node, "extrapolation_value", 0.0)), tuple(roi))
    return [ctx.network.add_layer(op, [x], ctx.name(node)).get_output(0)]


def _antialias(ctx, node, x, sizes, scales, roi):
    op = ops.ResizeAntialias(
        ctx.choice(node, "mode", None, _MODES), tuple(sizes), tuple(scales),
        ctx.attr(node, "coordinate_transformation_mode", "half_pixel"), float(ctx.attr(node, "cubic_coeff_a", -0.75)),
        bool(ctx.attr(node, "exclude_outside", 0)), float(ctx.attr(node, "extrapolation_value", 0.0)), tuple(roi))
    return ctx.network.add_layer(op, [x], ctx.name(node)).get_output(0)


def _keep_aspect_ratio(ctx, node, in_shape, sizes):
    """Output sizes and scales; a policy other than stretch gives every resized axis one scale (ONNX)."""
    policy = ctx.attr(node, "keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return list(sizes), [o / i for o, i in zip(sizes, in_shape)]
    axes = [a % len(in_shape) for a in ctx.attr(node, "axes", range(len(in_shape)))]
    ratios = [sizes[a] / in_shape[a] for a in axes]
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    result, scales = list(in_shape), [1.0] * len(in_shape)
    for a in axes:
        result[a], scales[a] = int(np.floor(in_shape[a] * scale + 0.5)), scale  # rounds half up
    return result, scales
