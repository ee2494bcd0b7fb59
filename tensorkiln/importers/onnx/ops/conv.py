"""Conv and ConvTranspose (auto_pad, groups, dilation, asymmetric pads, output_shape)."""
from __future__ import annotations

import math

from ....ir import ops
from ...window_checks import count_problem, first_problem, group_problem, least_problem
from ..registry import converter


def same_pads(in_sizes, kernel, stride, dilation, auto_pad: str) -> tuple[int, ...]:
    """Begin and end pads that make out = ceil(in / stride) (ONNX SAME_UPPER / SAME_LOWER)."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return tuple(begins + ends)


def spatial_rank(ctx, node, x) -> int:
    """The number of spatial dimensions of `x`, an (N, C, spatial...) input of a convolution or pooling node."""
    if len(x.shape) < 3:
        raise ctx.error(node, f"input {node.input[0]!r} has shape {list(x.shape)}; it needs (N, C, and at least one "
                              "spatial dimension)")
    return len(x.shape) - 2


def window_attrs(ctx, node, x, kernel, *, pads_allowed: bool = True):
    """kernel, stride and dilation of a convolution or pooling node, checked (each a tuple of positive ints with
    one value per spatial dimension) before anything divides by them."""
    rank = spatial_rank(ctx, node, x)
    kernel = tuple(int(k) for k in kernel)
    stride = tuple(int(s) for s in ctx.attr(node, "strides", [1] * rank))
    dilation = tuple(int(d) for d in ctx.attr(node, "dilations", [1] * rank))
    problem = first_problem(
        count_problem("kernel_shape", kernel, rank), least_problem("kernel_shape", kernel, 1),
        count_problem("strides", stride, rank), least_problem("strides", stride, 1),
        count_problem("dilations", dilation, rank), least_problem("dilations", dilation, 1))
    if problem:
        raise ctx.error(node, problem)
    return kernel, stride, dilation


def explicit_pads(ctx, node, rank: int) -> tuple[int, ...]:
    """The pads attribute (begins, then ends), checked: 2 non-negative values per spatial dimension."""
    pads = tuple(int(p) for p in ctx.attr(node, "pads", [0] * (2 * rank)))
    problem = first_problem(count_problem("pads", pads, rank, per_dim=2), least_problem("pads", pads, 0))
    if problem:
        raise ctx.error(node, problem)
    return pads


# ONNX's auto_pad values (an unknown one was read as NOTSET: explicit pads)
AUTO_PADS = {name: name for name in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")}


def spatial_attrs(ctx, node, x, kernel):
    """stride, dilation and pads of a convolution or pooling node (each checked)."""
    kernel, stride, dilation = window_attrs(ctx, node, x, kernel)
    rank = len(kernel)
    auto_pad = ctx.choice(node, "auto_pad", "NOTSET", AUTO_PADS)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(x.shape[2:], kernel, stride, dilation, auto_pad)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * rank)
    else:
        pads = explicit_pads(ctx, node, rank)
    return stride, dilation, pads


def check_bias(ctx, node, bias, filters: int) -> None:
    """A bias holds one value per output channel: shape (M,)."""
    if bias is not None and tuple(bias.shape) != (filters,):
        raise ctx.error(node, f"bias {node.input[2]!r} has shape {list(bias.shape)}; it needs one value per output "
                              f"channel ([{filters}])")


def check_group(ctx, node, group: int, in_channels: int, out_channels: int | None) -> int:
    problem = group_problem("group", int(group), in_channels, out_channels)
    if problem:
        raise ctx.error(node, problem)
    return int(group)


@converter("Conv")
def conv(ctx, node):
    x, weight, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    kernel = tuple(ctx.attr(node, "kernel_shape", weight.shape[2:]))
    stride, dilation, pads = spatial_attrs(ctx, node, x, kernel)
    group = check_group(ctx, node, ctx.attr(node, "group", 1), x.shape[1], weight.shape[0])
    check_bias(ctx, node, bias, weight.shape[0])
    op = ops.Convolution(stride, pads, dilation, group)
    return [ctx.network.add_layer(op, [x, weight, bias], ctx.name(node)).get_output(0)]


@converter("ConvTranspose")
def conv_transpose(ctx, node):
    x, weight, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    kernel, stride, dilation = window_attrs(ctx, node, x, ctx.attr(node, "kernel_shape", weight.shape[2:]))
    rank = len(kernel)
    output_padding = [int(p) for p in ctx.attr(node, "output_padding", [0] * rank)]
    pads = list(explicit_pads(ctx, node, rank))
    auto_pad = ctx.choice(node, "auto_pad", "NOTSET", AUTO_PADS)
    output_shape = ctx.attr(node, "output_shape")
    problem = first_problem(
        count_problem("output_padding", output_padding, rank), least_problem("output_padding", output_padding, 0),
        None if output_shape is None or len(output_shape) >= rank else
        f"attribute output_shape = {list(output_shape)} needs a size for each of the {rank} spatial dimension(s)",
        None if output_shape is None else least_problem("output_shape", output_shape, 1))
    if problem:
        raise ctx.error(node, problem)
    group = check_group(ctx, node, ctx.attr(node, "group", 1), x.shape[1], None)
    if len(weight.shape) != rank + 2 or weight.shape[0] != x.shape[1]:
        raise ctx.error(node, f"weight {node.input[1]!r} of shape {list(weight.shape)} does not fit an input of "
                              f"{x.shape[1]} channels: ConvTranspose weights are (C, M / group, kernel...)")
    check_bias(ctx, node, bias, weight.shape[1] * group)
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [size * s for size, s in zip(x.shape[2:], stride)]
    if output_shape is not None:
        output_shape = list(output_shape)[-rank:]
        for i in range(rank):
            full = stride[i] * (x.shape[2 + i] - 1) + output_padding[i] + (kernel[i] - 1) * dilation[i] + 1
            total = full - output_shape[i]
            if total < 0:  # the requested output is larger than the full result: extend at the end
                output_padding[i] -= total
                total = 0
            small, large = total // 2, total - total // 2
            upper = auto_pad == "SAME_UPPER"  # NOTSET puts the larger half first, like SAME_LOWER (ONNX spec)
            pads[i], pads[rank + i] = (small, large) if upper else (large, small)
    op = ops.Deconvolution(stride, tuple(pads), dilation, tuple(output_padding), group)
    return [ctx.network.add_layer(op, [x, weight, bias], ctx.name(node)).get_output(0)]
