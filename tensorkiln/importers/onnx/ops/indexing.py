"""ArgMax, ArgMin, TopK, CumSum, Einsum, GatherElements, GatherND, ScatterElements, Scatter, ScatterND,
OneHot, Trilu, Hardmax."""
from __future__ import annotations

from ....ir import ops
from ..registry import converter


def _layer(ctx, node, op, inputs):
    return ctx.network.add_layer(op, inputs, ctx.name(node)).outputs


@converter("ArgMax", "ArgMin")
def arg_reduce(ctx, node):
    op = ops.ArgReduce(ctx.attr(node, "axis", 0), node.op_type == "ArgMax", bool(ctx.attr(node, "keepdims", 1)),
                       bool(ctx.attr(node, "select_last_index", 0)))
    return _layer(ctx, node, op, [ctx.input(node, 0)])


@converter("TopK")
def top_k(ctx, node):
    k = int(ctx.attr(node, "k")) if ctx.opset < 10 else ctx.ints(node, 1, "K")[0]
    op = ops.TopK(k, ctx.attr(node, "axis", -1), bool(ctx.attr(node, "largest", 1)), bool(ctx.attr(node, "sorted", 1)))
    return _layer(ctx, node, op, [ctx.input(node, 0)])


@converter("CumSum")
def cumsum(ctx, node):
    axis = ctx.ints(node, 1, "axis")[0]
    op = ops.CumulativeSum(axis, bool(ctx.attr(node, "exclusive", 0)), bool(ctx.attr(node, "reverse", 0)))
    return _layer(ctx, node, op, [ctx.input(node, 0)])


@converter("Einsum")
def einsum(ctx, node):
    return _layer(ctx, node, ops.Einsum(ctx.attr(node, "equation").replace(" ", "")), ctx.inputs(node))


@converter("GatherElements")
def gather_elements(ctx, node):
    return _layer(ctx, node, ops.GatherElements(ctx.attr(node, "axis", 0)), [ctx.input(node, 0), ctx.input(node, 1)])


@converter("GatherND")
def gather_nd(ctx, node):
    data, indices, batch_dims = ctx.input(node, 0), ctx.input(node, 1), int(ctx.attr(node, "batch_dims", 0))
    if not 0 <= batch_dims < min(len(data.shape), len(indices.shape)):
        raise ctx.error(node, f"batch_dims {batch_dims} must be at least 0 and below the ranks of data "
                              f"{list(data.shape)} and indices {list(indices.shape)}")
    if not indices.shape or indices.shape[-1] > len(data.shape) - batch_dims:
        raise ctx.error(node, f"indices of shape {list(indices.shape)} address more dimensions than data "
                              f"{list(data.shape)} has after its {batch_dims} batch dimension(s)")
    return _layer(ctx, node, ops.GatherND(batch_dims), [data, indices])


_REDUCTIONS = {name: name for name in ("none", "add", "mul", "max", "min")}  # ONNX's scatter reductions


@converter("ScatterElements", "Scatter")
def scatter_elements(ctx, node):
    op = ops.ScatterElements(ctx.attr(node, "axis", 0), ctx.choice(node, "reduction", "none", _REDUCTIONS))
    return _layer(ctx, node, op, [ctx.input(node, i) for i in range(3)])


@converter("ScatterND")
def scatter_nd(ctx, node):
    op = ops.ScatterND(ctx.choice(node, "reduction", "none", _REDUCTIONS))
    return _layer(ctx, node, op, [ctx.input(node, i) for i in range(3)])


@converter("OneHot")
def one_hot(ctx, node):
    values = ctx.require_constant(node, 1, "depth").reshape(-1)
    if values.size != 1 or not values[0] >= 1:  # (NaN fails too)
        raise ctx.error(node, f"depth {values.tolist()[:4]} must be one positive number")
    depth = int(values[0])
    return _layer(ctx, node, ops.OneHot(depth, ctx.attr(node, "axis", -1)), [ctx.input(node, 0), ctx.input(node, 2)])


@converter("Trilu")
def trilu(ctx, node):
    k = ctx.ints(node, 1, "k")[0] if ctx.input(node, 1) is not None else 0
    return _layer(ctx, node, ops.Trilu(bool(ctx.attr(node, "upper", 1)), k), [ctx.input(node, 0)])


@converter("Hardmax")
def hardmax(ctx, node):
    x = ctx.input(node, 0)
    if ctx.opset >= 13:
        return _layer(ctx, node, ops.Hardmax(ctx.attr(node, "axis", -1)), [x])
    # before opset 13: coerced to 2D at `axis`, like Softmax
    axis = ctx.attr(node, "axis", 1) % len(x.shape)
    rows = 1
    for d in x.shape[:axis]:
        rows *= d
    flat = ctx.network.add_shuffle(x, reshape_dims=(rows, -1), name=ctx.name(node)).get_output(0)
    hard = _layer(ctx, node, ops.Hardmax(1), [flat])[0]
    return [ctx.network.add_shuffle(hard, reshape_dims=x.shape, name=ctx.name(node)).get_output(0)]
