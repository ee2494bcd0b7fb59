"""NonZero, NonMaxSuppression, Unique: outputs sized at run time."""
from __future__ import annotations

from ....ir import ops
from ..registry import converter


@converter("NonZero")
def non_zero(ctx, node):
    return ctx.network.add_layer(ops.NonZero(), [ctx.input(node, 0)], ctx.name(node)).outputs


def _optional_scalar(ctx, node, index, what, cast, default):
    if ctx.input(node, index) is None:
        return default
    return cast(ctx.require_constant(node, index, what).reshape(-1)[0])


@converter("NonMaxSuppression")
def non_max_suppression(ctx, node):
    op = ops.NonMaxSuppression(_optional_scalar(ctx, node, 2, "max_output_boxes_per_class", int, 0),
                               _optional_scalar(ctx, node, 3, "iou_threshold", float, 0.0),
                               _optional_scalar(ctx, node, 4, "score_threshold", float, None),
                               bool(ctx.attr(node, "center_point_box", 0)))
    return ctx.network.add_layer(op, [ctx.input(node, 0), ctx.input(node, 1)], ctx.name(node)).outputs


@converter("Unique")
def unique(ctx, node):
    op = ops.Unique(ctx.attr(node, "axis"), bool(ctx.attr(node, "sorted", 1)))
    return ctx.network.add_layer(op, [ctx.input(node, 0)], ctx.name(node)).outputs
