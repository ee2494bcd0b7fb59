"""MaxPool, AveragePool, LpPool and their global forms."""
from __future__ import annotations

from ....ir import ops
from ....ir.ops import PoolingType
from ..registry import converter
from .conv import spatial_attrs

_POOL = {"MaxPool": PoolingType.MAX, "AveragePool": PoolingType.AVERAGE, "LpPool": PoolingType.LP}
_GLOBAL = {"GlobalMaxPool": PoolingType.MAX, "GlobalAveragePool": PoolingType.AVERAGE,
           "GlobalLpPool": PoolingType.LP}


@converter(*_POOL)
def pool(ctx, node):
    if len(node.output) > 1 and node.output[1]:
        raise ctx.error(node, "the Indices output of MaxPool is not supported")
    x = ctx.input(node, 0)
    kernel = ctx.attr(node, "kernel_shape")
    if kernel is None:
        raise ctx.error(node, "has no kernel_shape attribute, which it requires; fix the model")
    stride, dilation, pads = spatial_attrs(ctx, node, x, kernel)
    op = ops.Pooling(_POOL[node.op_type], kernel, stride, pads, dilation, bool(ctx.attr(node, "ceil_mode", 0)),
                     bool(ctx.attr(node, "count_include_pad", 0)), int(ctx.attr(node, "p", 2)))
    return [ctx.network.add_layer(op, [x], ctx.name(node)).get_output(0)]


@converter(*_GLOBAL)
def global_pool(ctx, node):
    op = ops.GlobalPooling(_GLOBAL[node.op_type], int(ctx.attr(node, "p", 2)))
    return [ctx.network.add_layer(op, [ctx.input(node, 0)], ctx.name(node)).get_output(0)]

