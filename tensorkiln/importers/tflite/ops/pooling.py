"""MAX_POOL_2D, AVERAGE_POOL_2D, L2_POOL_2D: pooled in NCHW between two transposes.

TFLite's SAME average pooling divides by the number of pixels inside the image (padding not counted), and so
does L2_POOL_2D: sqrt(mean(x^2)) over the window, not the IR's LP pooling (sqrt of the sum)."""
from __future__ import annotations

from ....ir import ops
from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import PoolingType
from ....ir.ops import UnaryOperation as U
from ..registry import converter
from .conv import spatial_pads

POOLS = {"MAX_POOL_2D": PoolingType.MAX, "AVERAGE_POOL_2D": PoolingType.AVERAGE, "L2_POOL_2D": PoolingType.AVERAGE}


@converter(*POOLS)
def pool_2d(ctx, op):
    x = ctx.input(0)
    kernel = (ctx.option("FilterHeight", 1), ctx.option("FilterWidth", 1))
    stride = (ctx.option("StrideH", 1), ctx.option("StrideW", 1))
    pads = spatial_pads(ctx, x.shape[1], x.shape[2], kernel, stride, (1, 1))
    attrs = ops.Pooling(POOLS[op.op_name], kernel, stride, pads, (1, 1), False, False, 2)
    net, l2 = ctx.network, op.op_name == "L2_POOL_2D"
    if l2:  # the root of the mean of squares
        x = net.add_elementwise(x, x, E.PROD, name=ctx.name).get_output(0)
    y = net.add_layer(attrs, [ctx.to_nchw(x)], ctx.name).get_output(0)
    if l2:
        y = net.add_unary(y, U.SQRT, name=ctx.name).get_output(0)
    return [ctx.to_nhwc(ctx.fused_activation(y))]
