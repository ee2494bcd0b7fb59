"""MEAN, SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD, REDUCE_ANY, REDUCE_ALL, ARG_MAX, ARG_MIN, CUMSUM."""
from __future__ import annotations

from ....ir import ops
from ....ir.dtypes import DataType
from ....ir.ops import ReduceOperation as R
from ..registry import converter

REDUCTIONS = {"MEAN": R.MEAN, "SUM": R.SUM, "REDUCE_MAX": R.MAX, "REDUCE_MIN": R.MIN, "REDUCE_PROD": R.PROD}
# logical reductions, computed on 0/1 integers: any = max, all = min
LOGICAL = {"REDUCE_ANY": R.MAX, "REDUCE_ALL": R.MIN}


def _axes(ctx, rank: int) -> tuple[int, ...]:
    return tuple(sorted({ctx.axis(a, rank) for a in ctx.ints(1, "axes")}))


@converter(*REDUCTIONS)
def reduce(ctx, op):
    x = ctx.input(0)
    axes = _axes(ctx, len(x.shape))
    if not axes:  # TFLite reduces nothing over an empty axis list (the IR's empty list means every axis)
        return [ctx.network.add_identity(x, name=ctx.name).get_output(0)]
    return [ctx.network.add_reduce(x, REDUCTIONS[op.op_name], axes, bool(ctx.option("KeepDims", False)),
                                   name=ctx.name).get_output(0)]


@converter(*LOGICAL)
def reduce_logical(ctx, op):
    x = ctx.cast(ctx.input(0), DataType.INT32)
    axes = _axes(ctx, len(x.shape))
    y = ctx.network.add_reduce(x, LOGICAL[op.op_name], axes, bool(ctx.option("KeepDims", False)), name=ctx.name)
    return [ctx.cast(y.get_output(0), DataType.BOOL)]


@converter("ARG_MAX", "ARG_MIN")
def arg_reduce(ctx, op):
    x = ctx.input(0)
    axis = ctx.axis(ctx.ints(1, "axis")[0], len(x.shape))
    attrs = ops.ArgReduce(axis, op.op_name == "ARG_MAX", keep_dims=False)
    y = ctx.network.add_layer(attrs, [x], ctx.name).get_output(0)
    return [ctx.cast(y, ctx.output_dtype())]


@converter("CUMSUM")
def cumsum(ctx, op):
    x = ctx.input(0)
    axis = ctx.axis(ctx.ints(1, "axis")[0], len(x.shape))
    attrs = ops.CumulativeSum(axis, bool(ctx.option("Exclusive", False)), bool(ctx.option("Reverse", False)))
    return [ctx.network.add_layer(attrs, [x], ctx.name).get_output(0)]
