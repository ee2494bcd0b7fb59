"""ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
ReduceLogSumExp, ReduceSumSquare (axes as attribute or, from opset 13/18, as input)."""
from __future__ import annotations

from ....ir.ops import ReduceOperation as R
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
        return [ctx.network.add_identity(x, name=ctx.name(node)).get_output(0)]
    keep = bool(ctx.attr(node, "keepdims", 1))
    return [ctx.network.add_reduce(x, _REDUCE[node.op_type], axes, keep, name=ctx.name(node)).get_output(0)]
