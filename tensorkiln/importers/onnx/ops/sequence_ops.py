"""CumProd, Compress, ReverseSequence, TensorScatter, BitCast."""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ..registry import converter
from ..types import onnx_to_datatype


@converter("CumProd")
def cum_prod(ctx, node):
    op = ops.CumulativeProduct(ctx.ints(node, 1, "axis")[0], bool(ctx.attr(node, "exclusive", 0)),
                               bool(ctx.attr(node, "reverse", 0)))
    return ctx.network.add_layer(op, [ctx.input(node, 0)], ctx.name(node)).outputs


@converter("Compress")
def compress(ctx, node):
    x, axis = ctx.input(node, 0), ctx.attr(node, "axis")
    condition = ctx.constant(node, 1)
    if condition is None:  # the output size follows run-time data
        return ctx.network.add_layer(ops.Compress(axis), [x, ctx.input(node, 1)], ctx.name(node)).outputs
    if axis is None:
        x = ctx.network.add_shuffle(x, reshape_dims=(-1,), name=ctx.name(node)).get_output(0)
        axis = 0
    length = x.shape[axis % len(x.shape)]
    keep = np.nonzero(condition.reshape(-1)[:length])[0].astype(np.int64)
    indices = ctx.network.add_constant(keep.shape, keep).get_output(0)
    return [ctx.network.add_gather(x, indices, axis, name=ctx.name(node)).get_output(0)]


@converter("ReverseSequence")
def reverse_sequence(ctx, node):
    x = ctx.input(node, 0)
    rank = len(x.shape)
    op = ops.ReverseSequence(int(ctx.attr(node, "batch_axis", 1)) % rank, int(ctx.attr(node, "time_axis", 0)) % rank)
    if rank < 2 or op.batch_axis == op.time_axis:
        raise ctx.error(node, "batch_axis and time_axis must name two different dims of a tensor of rank >= 2")
    return ctx.network.add_layer(op, [x, ctx.input(node, 1)], ctx.name(node)).outputs


@converter("TensorScatter")
def tensor_scatter(ctx, node):
    mode = ctx.attr(node, "mode", "linear")
    if mode not in ("linear", "circular"):
        raise ctx.error(node, f"mode {mode!r} is not linear or circular")
    op = ops.TensorScatter(int(ctx.attr(node, "axis", -2)), mode == "circular")
    return ctx.network.add_layer(op, [ctx.input(node, i) for i in range(3)], ctx.name(node)).outputs


@converter("BitCast")
def bitcast(ctx, node):
    x = ctx.input(node, 0)
    to = onnx_to_datatype(ctx.attr(node, "to"), "BitCast 'to'")
    if to.itemsize != x.dtype.itemsize:
        raise ctx.error(node, f"BitCast needs types of one width; {x.dtype.value} and {to.value} differ")
    return ctx.network.add_layer(ops.BitCast(to), [x], ctx.name(node)).outputs
