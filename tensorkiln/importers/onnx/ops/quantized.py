"""DynamicQuantizeLinear, QLinearMatMul, QLinearConv, MatMulInteger, ConvInteger."""
from __future__ import annotations

from ....ir import ops
from ....ir.dtypes import DataType
from ....ir.ops import ElementWiseOperation as E
from ..registry import converter
from .conv import check_group, spatial_attrs


@converter("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx, node):
    return ctx.network.add_layer(ops.DynamicQuantizeLinear(), [ctx.input(node, 0)], ctx.name(node)).outputs


@converter("QLinearMatMul")
def qlinear_matmul(ctx, node):
    return ctx.network.add_layer(ops.QLinearMatMul(), [ctx.input(node, i) for i in range(8)], ctx.name(node)).outputs


@converter("QLinearConv")
def qlinear_conv(ctx, node):
    x, weight = ctx.input(node, 0), ctx.input(node, 3)
    kernel = tuple(ctx.attr(node, "kernel_shape", weight.shape[2:]))
    stride, dilation, pads = spatial_attrs(ctx, node, x, kernel)
    group = check_group(ctx, node, ctx.attr(node, "group", 1), x.shape[1], weight.shape[0])
    op = ops.QLinearConv(stride, pads, dilation, group)
    return ctx.network.add_layer(op, [ctx.input(node, i) for i in range(9)], ctx.name(node)).outputs


def _centered_double(ctx, node, value, zero_point, per_row_shape):
    """Cast(value) - Cast(zero_point) in float64, which holds the int32 results of 8-bit products exactly."""
    net, name = ctx.network, ctx.name(node)
    centered = net.add_cast(value, DataType.DOUBLE, name=name).get_output(0)
    if zero_point is None:
        return centered
    zero_point = net.add_cast(zero_point, DataType.DOUBLE, name=name).get_output(0)
    if len(zero_point.shape) == 1 and zero_point.shape[0] > 1:  # one zero point per row / output channel
        zero_point = net.add_shuffle(zero_point, reshape_dims=per_row_shape, name=name).get_output(0)
    return net.add_elementwise(centered, zero_point, E.SUB, name=name).get_output(0)


@converter("MatMulInteger")
def matmul_integer(ctx, node):
    a = _centered_double(ctx, node, ctx.input(node, 0), ctx.input(node, 2), (-1, 1))
    b = _centered_double(ctx, node, ctx.input(node, 1), ctx.input(node, 3), (-1,))
    product = ctx.network.add_matrix_multiply(a, b, name=ctx.name(node)).get_output(0)
    return [ctx.network.add_cast(product, DataType.INT32, name=ctx.name(node)).get_output(0)]


@converter("ConvInteger")
def conv_integer(ctx, node):
    x, weight = ctx.input(node, 0), ctx.input(node, 1)
    kernel = tuple(ctx.attr(node, "kernel_shape", weight.shape[2:]))
    stride, dilation, pads = spatial_attrs(ctx, node, x, kernel)
    rank = len(weight.shape)
    # the convolution pads the centered input with zeros: padding holds the zero point, as ONNX specifies
    centered_x = _centered_double(ctx, node, x, ctx.input(node, 2), None)
    centered_w = _centered_double(ctx, node, weight, ctx.input(node, 3), (-1,) + (1,) * (rank - 1))
    op = ops.Convolution(stride, pads, dilation, check_group(ctx, node, ctx.attr(node, "group", 1), x.shape[1],
                                                             weight.shape[0]))
    y = ctx.network.add_layer(op, [centered_x, centered_w, None], ctx.name(node)).get_output(0)
    return [ctx.network.add_cast(y, DataType.INT32, name=ctx.name(node)).get_output(0)]
