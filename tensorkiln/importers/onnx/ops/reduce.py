"""ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
ReduceLogSumExp, ReduceSumSquare (axes as attribute or, from opset 13/18, as input)."""
from __future__ import annotations

from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import ReduceOperation as R
from ....ir.ops import UnaryOperation as U
from ..registry import converter

_REDUCE = {
    "ReduceSum": R.SUM, "ReduceMean": R.MEAN, "ReduceMax": R.MAX, "ReduceMin": R.MIN, "ReduceProd": R.PROD,
    "ReduceL1": R.L1, "ReduceL2": R.L2, "ReduceLogSum": R.LOG_SUM, "ReduceLogSumExp": R.LOG_SUM_EXP,
    "ReduceSumSquare": R.SUM_SQUARE,
}


def _axes_as_input(op_type: str, opset: int) -> bool:
    return opset >= (13 if op_type == "ReduceSum" else 18)


@converter(*_REDUCE)
def reduce(ctx, node):
    x = ctx.input(node, 0)
    if _axes_as_input(node.op_type, ctx.opset):
        axes = ctx.ints(node, 1, "axes") if ctx.input(node, 1) is not None else []
    else:
        axes = list(ctx.attr(node, "axes", []))
    if not axes and ctx.attr(node, "noop_with_empty_axes", 0):
        return [_reduce_nothing(ctx, node, x)]
    keep = bool(ctx.attr(node, "keepdims", 1))
    return [ctx.network.add_reduce(x, _REDUCE[node.op_type], axes, keep, name=ctx.name(node)).get_output(0)]


def _reduce_nothing(ctx, node, x):
    """A reduction over no axes: the identity, but composite reductions keep their elementwise steps (ONNX:
    ReduceLogSum gives log(x), ReduceSumSquare x * x, ReduceL1 and ReduceL2 |x|)."""
    net, name = ctx.network, ctx.name(node)
    if node.op_type in ("ReduceL1", "ReduceL2"):
        return net.add_unary(x, U.ABS, name=name).get_output(0)
    if node.op_type == "ReduceLogSum":
        return net.add_unary(x, U.LOG, name=name).get_output(0)
    if node.op_type == "ReduceSumSquare":
        return net.add_elementwise(x, x, E.PROD, name=name).get_output(0)
    return net.add_identity(x, name=name).get_output(0)
