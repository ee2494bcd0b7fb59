"""Conv and ConvTranspose (auto_pad, groups, dilation, asymmetric pads, output_shape)."""
from __future__ import annotations

import math

from ....ir import ops
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


def spatial_attrs(ctx, node, x, kernel):
    """stride, dilation and pads of a convolution or pooling node."""
    rank = len(kernel)
    stride = tuple(ctx.attr(node, "strides", [1] * rank))
    dilation = tuple(ctx.attr(node, "dilations", [1] * rank))
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(x.shape[2:], kernel, stride, dilation, auto_pad)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * rank)
    else:
        pads = tuple(ctx.attr(node, "pads", [0] * (2 * rank)))
    return stride, dilation, pads


@converter("Conv")
def conv(ctx, node):
    x, weight, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    kernel = tuple(ctx.attr(node, "kernel_shape", weight.shape[2:]))
    stride, dilation, pads = spatial_attrs(ctx, node, x, kernel)
    op = ops.Convolution(stride, pads, dilation, ctx.attr(node, "group", 1))
    return [ctx.network.add_layer(op, [x, weight, bias], ctx.name(node)).get_output(0)]


@converter("ConvTranspose")
def conv_transpose(ctx, node):
    x, weight, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    kernel = tuple(ctx.attr(node, "kernel_shape", weight.shape[2:]))
    rank = len(kernel)
    stride = tuple(ctx.attr(node, "strides", [1] * rank))
    dilation = tuple(ctx.attr(node, "dilations", [1] * rank))
    output_padding = list(ctx.attr(node, "output_padding", [0] * rank))
    pads = list(ctx.attr(node, "pads", [0] * (2 * rank)))
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
    output_shape = ctx.attr(node, "output_shape")
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
    op = ops.Deconvolution(stride, tuple(pads), dilation, tuple(output_padding), ctx.attr(node, "group", 1))
    return [ctx.network.add_layer(op, [x, weight, bias], ctx.name(node)).get_output(0)]
