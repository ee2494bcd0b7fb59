"""Slicing, padding, indexing and constant-producing ops: STRIDED_SLICE, SLICE, REVERSE_V2, PAD, PADV2,
MIRROR_PAD, GATHER, GATHER_ND, EMBEDDING_LOOKUP, TOPK_V2, ONE_HOT, SHAPE, RANK, FILL, RANGE."""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ....ir.dtypes import DataType
from ....ir.ops import PaddingMode
from ..registry import converter


def slice_layer(ctx, x, starts, counts, steps):
    """`counts[d]` elements of each dim from `starts[d]` in steps of `steps[d]`. The IR's Slice takes ends as
    Python would (exclusive; -1 for a backward slice that runs through index 0)."""
    ends = tuple(s + c * st for s, c, st in zip(starts, counts, steps))
    attrs = ops.Slice(tuple(starts), ends, tuple(range(len(starts))), tuple(steps))
    return ctx.network.add_layer(attrs, [x], ctx.name).get_output(0)


def _bit(mask: int, i: int) -> bool:
    return bool((mask >> i) & 1)


@converter("STRIDED_SLICE")
def strided_slice(ctx, op):
    x = ctx.input(0)
    begin, end = ctx.ints(1, "begin"), ctx.ints(2, "end")
    strides = ctx.ints(3, "strides") if ctx.has_input(3) else [1] * len(begin)
    masks = {name: int(ctx.option(name, 0)) for name in ("BeginMask", "EndMask", "EllipsisMask", "NewAxisMask",
                                                         "ShrinkAxisMask")}
    offset = bool(ctx.option("Offset", False))
    rank = len(x.shape)
    starts, counts, steps, out_shape = [], [], [], []
    dim = 0
    for i in range(len(begin)):
        if _bit(masks["EllipsisMask"], i):  # every dim the remaining entries do not name, untouched
            named_after = sum(1 for j in range(i + 1, len(begin)) if not _bit(masks["NewAxisMask"], j))
            for _ in range(rank - dim - named_after):
                starts.append(0), counts.append(x.shape[dim]), steps.append(1), out_shape.append(x.shape[dim])
                dim += 1
            continue
        if _bit(masks["NewAxisMask"], i):
            out_shape.append(1)
            continue
        size = x.shape[dim]
        if _bit(masks["ShrinkAxisMask"], i):
            start = begin[i] + size if begin[i] < 0 else begin[i]
            if not 0 <= start < size:
                raise ctx.error(f"index {begin[i]} of dim {dim} is out of range for size {size}")
            starts.append(start), counts.append(1), steps.append(1)
        else:
            stop = begin[i] + end[i] if offset else end[i]
            bounds = slice(None if _bit(masks["BeginMask"], i) else begin[i],
                           None if _bit(masks["EndMask"], i) else stop, strides[i]).indices(size)
            count = len(range(*bounds))
            starts.append(bounds[0] if count else 0), counts.append(count), steps.append(bounds[2])
            out_shape.append(count)
        dim += 1
    for d in range(dim, rank):  # dims the slice does not name are kept whole
        starts.append(0), counts.append(x.shape[d]), steps.append(1), out_shape.append(x.shape[d])
    y = x
    if any(c != s for c, s in zip(counts, x.shape)) or any(s != 1 for s in steps):
        y = slice_layer(ctx, x, starts, counts, steps)
    if tuple(out_shape) != tuple(y.shape):
        y = ctx.reshape(y, out_shape)
    elif y is x:
        y = ctx.network.add_identity(x, name=ctx.name).get_output(0)
    return [y]


@converter("SLICE")
def slice_op(ctx, op):
    x = ctx.input(0)
    begin, size = ctx.ints(1, "begin"), ctx.ints(2, "size")
    size = [d - b if s == -1 else s for d, b, s in zip(x.shape, begin, size)]
    return [slice_layer(ctx, x, begin, size, [1] * len(begin))]


@converter("REVERSE_V2")
def reverse(ctx, op):
    x = ctx.input(0)
    axes = {ctx.axis(a, len(x.shape)) for a in ctx.ints(1, "axes")}
    starts = [d - 1 if a in axes else 0 for a, d in enumerate(x.shape)]
    steps = [-1 if a in axes else 1 for a in range(len(x.shape))]
    return [slice_layer(ctx, x, starts, list(x.shape), steps)]


def _paddings(ctx, rank: int) -> np.ndarray:
    return np.asarray(ctx.require_value(1, "paddings"), dtype=np.int64).reshape(rank, 2)


@converter("PAD", "PADV2")
def pad(ctx, op):
    x = ctx.input(0)
    paddings = _paddings(ctx, len(x.shape))
    value = 0.0
    if op.op_name == "PADV2" and ctx.has_input(2):
        value = float(np.asarray(ctx.require_value(2, "constant value")).reshape(-1)[0])
    elif ctx.input_record(0).is_quantized:  # padding holds the zero point: real 0
        value = 0.0
    attrs = ops.Pad(tuple(int(p) for p in (*paddings[:, 0], *paddings[:, 1])), PaddingMode.CONSTANT, value)
    return [ctx.network.add_layer(attrs, [x], ctx.name).get_output(0)]


@converter("MIRROR_PAD")
def mirror_pad(ctx, op):
    x = ctx.input(0)
    paddings = _paddings(ctx, len(x.shape))
    if ctx.option("Mode", 0) == 0:  # REFLECT: the edge is not repeated
        attrs = ops.Pad(tuple(int(p) for p in (*paddings[:, 0], *paddings[:, 1])), PaddingMode.REFLECT, 0.0)
        return [ctx.network.add_layer(attrs, [x], ctx.name).get_output(0)]
    # SYMMETRIC repeats the edge: one gather of mirrored indices per padded axis
    y = x
    for axis, (before, after) in enumerate(paddings):
        if before or after:
            size = x.shape[axis]
            index = np.concatenate([np.arange(before)[::-1], np.arange(size), size - 1 - np.arange(after)])
            indices = ctx.network.add_constant(None, index.astype(np.int64), name=ctx.name + ".indices")
            y = ctx.network.add_gather(y, indices.get_output(0), axis, name=ctx.name).get_output(0)
    return [y]


@converter("GATHER")
def gather(ctx, op):
    x, indices = ctx.input(0), ctx.input(1)
    if int(ctx.option("BatchDims", 0)):
        raise ctx.error("GATHER with batch_dims is not supported")
    axis = ctx.axis(ctx.option("Axis", 0), len(x.shape))
    return [ctx.network.add_gather(x, indices, axis, name=ctx.name).get_output(0)]


@converter("EMBEDDING_LOOKUP")
def embedding_lookup(ctx, op):
    return [ctx.network.add_gather(ctx.input(1), ctx.input(0), 0, name=ctx.name).get_output(0)]


@converter("GATHER_ND")
def gather_nd(ctx, op):
    indices = ctx.cast(ctx.input(1), DataType.INT64)
    return [ctx.network.add_layer(ops.GatherND(0), [ctx.input(0), indices], ctx.name).get_output(0)]


@converter("TOPK_V2")
def top_k(ctx, op):
    x = ctx.input(0)
    values, indices = ctx.network.add_layer(ops.TopK(ctx.ints(1, "k")[0], -1, True, True), [x], ctx.name).outputs
    return [values, ctx.cast(indices, ctx.output_dtype(1))]


@converter("ONE_HOT")
def one_hot(ctx, op):
    # inputs: indices, depth, on value, off value
    depth = ctx.ints(1, "depth")[0]
    on, off = (np.asarray(ctx.require_value(i, what)).reshape(()) for i, what in ((2, "on value"), (3, "off value")))
    values = ctx.network.add_constant(None, np.stack([off, on]), name=ctx.name + ".values").get_output(0)
    attrs = ops.OneHot(depth, int(ctx.option("Axis", -1)))
    return [ctx.network.add_layer(attrs, [ctx.input(0), values], ctx.name).get_output(0)]


def _constant(ctx, value) -> list:
    array = np.asarray(value, dtype=ctx.output_dtype().numpy)
    return [ctx.network.add_constant(None, array, name=ctx.name).get_output(0)]


@converter("SHAPE")
def shape(ctx, op):
    return _constant(ctx, ctx.input(0).shape)


@converter("RANK")
def rank(ctx, op):
    return _constant(ctx, len(ctx.input(0).shape))


@converter("FILL")
def fill(ctx, op):
    dims = tuple(ctx.ints(0, "dims"))
    value = ctx.value(1)
    if value is not None:
        return _constant(ctx, np.full(dims, np.asarray(value).reshape(())))
    scalar = ctx.reshape(ctx.input(1), (1,) * len(dims))
    return [ctx.network.add_layer(ops.Expand(dims), [scalar], ctx.name).get_output(0)]


@converter("RANGE")
def range_op(ctx, op):
    start, limit, delta = (np.asarray(ctx.require_value(i, what)).reshape(())
                           for i, what in ((0, "start"), (1, "limit"), (2, "delta")))
    return _constant(ctx, np.arange(start, limit, delta))
