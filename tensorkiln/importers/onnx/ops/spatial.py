"""CenterCropPad, Col2Im, AffineGrid, MaxUnpool, RoiAlign, DeformConv."""
from __future__ import annotations

from ....ir import ops
from ...window_checks import count_problem, first_problem, least_problem
from ..registry import converter
from .conv import check_group, explicit_pads, window_attrs


@converter("CenterCropPad")
def center_crop_pad(ctx, node):
    x = ctx.input(node, 0)
    rank = len(x.shape)
    target = ctx.ints(node, 1, "shape")
    axes = [a % rank for a in ctx.attr(node, "axes", range(rank))]
    begin, end = [0] * rank, [0] * rank
    for axis, size in zip(axes, target):
        # one Pad does both: positive amounts pad, negative ones crop; an odd difference favours the end
        difference = size - x.shape[axis]
        magnitude = abs(difference)
        sign = 1 if difference > 0 else -1
        begin[axis], end[axis] = sign * (magnitude // 2), sign * (magnitude - magnitude // 2)
    return [ctx.network.add_layer(ops.Pad(tuple(begin + end)), [x], ctx.name(node)).get_output(0)]


@converter("Col2Im")
def col2im(ctx, node):
    image, block = ctx.ints(node, 1, "image_shape"), ctx.ints(node, 2, "block_shape")
    rank = len(image)
    dilations = [int(d) for d in ctx.attr(node, "dilations", [1] * rank)]
    strides = [int(s) for s in ctx.attr(node, "strides", [1] * rank)]
    problem = first_problem(
        least_problem("image_shape", image, 1), count_problem("block_shape", block, rank),
        least_problem("block_shape", block, 1), count_problem("dilations", dilations, rank),
        least_problem("dilations", dilations, 1), count_problem("strides", strides, rank),
        least_problem("strides", strides, 1))
    if problem:
        raise ctx.error(node, problem)
    op = ops.Col2Im(tuple(image), tuple(block), tuple(dilations), explicit_pads(ctx, node, rank), tuple(strides))
    return ctx.network.add_layer(op, [ctx.input(node, 0)], ctx.name(node)).outputs


@converter("AffineGrid")
def affine_grid(ctx, node):
    size = ctx.ints(node, 1, "size")
    if len(size) not in (4, 5):
        raise ctx.error(node, f"size {size} must be [N, C, H, W] or [N, C, D, H, W]")
    op = ops.AffineGrid(tuple(size), bool(ctx.attr(node, "align_corners", 0)))
    return ctx.network.add_layer(op, [ctx.input(node, 0)], ctx.name(node)).outputs


@converter("MaxUnpool")
def max_unpool(ctx, node):
    x = ctx.input(node, 0)
    if ctx.attr(node, "kernel_shape") is None:
        raise ctx.error(node, "has no kernel_shape attribute, which it requires; fix the model")
    kernel, strides, _ = window_attrs(ctx, node, x, ctx.attr(node, "kernel_shape"))
    spatial = len(kernel)
    pads = explicit_pads(ctx, node, spatial)
    pooled = list(x.shape[:2]) + [(x.shape[2 + d] - 1) * strides[d] - (pads[d] + pads[spatial + d]) + kernel[d]
                                  for d in range(spatial)]
    output = ctx.ints(node, 2, "output_shape") if ctx.input(node, 2) is not None else pooled
    if any(o < p for o, p in zip(output, pooled)):
        raise ctx.error(node, f"output_shape {output} is smaller than the unpooled shape {pooled}")
    op = ops.MaxUnpool(tuple(pooled), tuple(output))
    return ctx.network.add_layer(op, [x, ctx.input(node, 1)], ctx.name(node)).outputs


@converter("RoiAlign")
def roi_align(ctx, node):
    # RoiAlign-10 has no coordinate_transformation_mode: it behaves as output_half_pixel
    default = "half_pixel" if ctx.opset >= 16 else "output_half_pixel"
    transform = ctx.attr(node, "coordinate_transformation_mode", default)
    op = ops.RoiAlign(int(ctx.attr(node, "output_height", 1)), int(ctx.attr(node, "output_width", 1)),
                      int(ctx.attr(node, "sampling_ratio", 0)), float(ctx.attr(node, "spatial_scale", 1.0)),
                      ctx.attr(node, "mode", "avg"), transform == "half_pixel")
    if op.mode not in ("avg", "max"):
        raise ctx.error(node, f"mode {op.mode!r} is not avg or max")
    return ctx.network.add_layer(op, [ctx.input(node, i) for i in range(3)], ctx.name(node)).outputs


@converter("DeformConv")
def deform_conv(ctx, node):
    x, weight = ctx.input(node, 0), ctx.input(node, 1)
    if len(x.shape) != 4:
        raise ctx.error(node, "only 2-D DeformConv (4-D input) is supported")
    _, strides, dilations = window_attrs(ctx, node, x, ctx.attr(node, "kernel_shape", weight.shape[2:]))
    group = check_group(ctx, node, ctx.attr(node, "group", 1), x.shape[1], weight.shape[0])
    offset_group = int(ctx.attr(node, "offset_group", 1))
    if offset_group < 1 or x.shape[1] % offset_group:
        raise ctx.error(node, f"attribute offset_group = {offset_group} must be positive and divide the "
                              f"{x.shape[1]} input channels; fix the model")
    op = ops.DeformConv(strides, explicit_pads(ctx, node, 2), dilations, group, offset_group)
    return ctx.network.add_layer(op, [ctx.input(node, i) for i in range(5)], ctx.name(node)).outputs


@converter("MaxRoiPool")
def max_roi_pool(ctx, node):
    pooled = ctx.attr(node, "pooled_shape")
    if pooled is None or len(pooled) != 2:
        raise ctx.error(node, "the pooled_shape attribute [height, width] is required")
    op = ops.MaxRoiPool(int(pooled[0]), int(pooled[1]), float(ctx.attr(node, "spatial_scale", 1.0)))
    return ctx.network.add_layer(op, [ctx.input(node, 0), ctx.input(node, 1)], ctx.name(node)).outputs
