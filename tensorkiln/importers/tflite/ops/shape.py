"""Shape and layout ops on NHWC tensors as stored: RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE, CONCATENATION,
SPLIT, SPLIT_V, PACK, UNPACK, TILE, BROADCAST_TO, DEPTH_TO_SPACE, SPACE_TO_DEPTH, SPACE_TO_BATCH_ND,
BATCH_TO_SPACE_ND."""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ....network import resolve_reshape
from ..registry import converter


def _target_shape(ctx, x) -> tuple[int, ...]:
    """RESHAPE's target: the shape input (with one -1), else the NewShape option, else the output's shape."""
    shape = ctx.value(1) if ctx.has_input(1) else None
    if shape is None:
        shape = ctx.option("NewShapeAsNumpy")
        shape = None if shape is None or isinstance(shape, int) or not len(shape) else shape
    if shape is None:
        return tuple(ctx.output_record().shape)
    return resolve_reshape(x.shape, [int(d) for d in np.asarray(shape).reshape(-1)], allow_zero_copy=False)


@converter("RESHAPE")
def reshape(ctx, op):
    x = ctx.input(0)
    return [ctx.reshape(x, _target_shape(ctx, x))]


@converter("SQUEEZE")
def squeeze(ctx, op):
    x = ctx.input(0)
    dims = ctx.option("SqueezeDimsAsNumpy")
    rank = len(x.shape)
    axes = ({ctx.axis(int(a), rank) for a in dims} if dims is not None and not isinstance(dims, int) and len(dims)
            else {a for a, d in enumerate(x.shape) if d == 1})
    return [ctx.reshape(x, [d for a, d in enumerate(x.shape) if a not in axes])]


@converter("EXPAND_DIMS")
def expand_dims(ctx, op):
    x = ctx.input(0)
    axis = ctx.ints(1, "axis")[0]
    axis = axis % (len(x.shape) + 1)
    shape = list(x.shape)
    shape.insert(axis, 1)
    return [ctx.reshape(x, shape)]


@converter("TRANSPOSE")
def transpose(ctx, op):
    return [ctx.transpose(ctx.input(0), ctx.ints(1, "permutation"))]


@converter("CONCATENATION")
def concatenation(ctx, op):
    inputs = [ctx.input(i) for i in range(len(op.inputs))]
    axis = ctx.axis(ctx.option("Axis", 0), len(inputs[0].shape))
    y = ctx.network.add_concatenation(inputs, axis, name=ctx.name).get_output(0)
    return [ctx.fused_activation(y)]


def split(ctx, x, axis: int, sizes) -> list:
    if len(sizes) == 1:
        return [ctx.network.add_identity(x, name=ctx.name).get_output(0)]
    return ctx.network.add_layer(ops.Split(axis, tuple(int(s) for s in sizes)), [x], ctx.name).outputs


@converter("SPLIT")
def split_equal(ctx, op):
    x = ctx.input(1)  # inputs: axis, value
    axis = ctx.axis(ctx.ints(0, "axis")[0], len(x.shape))
    count = int(ctx.option("NumSplits", len(op.outputs)))
    return split(ctx, x, axis, [x.shape[axis] // count] * count)


@converter("SPLIT_V")
def split_sizes(ctx, op):
    x = ctx.input(0)  # inputs: value, size_splits, axis
    axis = ctx.axis(ctx.ints(2, "axis")[0], len(x.shape))
    sizes = ctx.ints(1, "split sizes")
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - sum(s for s in sizes if s != -1)
    return split(ctx, x, axis, sizes)


@converter("PACK")
def pack(ctx, op):
    inputs = [ctx.input(i) for i in range(len(op.inputs))]
    rank = len(inputs[0].shape) + 1
    axis = ctx.option("Axis", 0) % rank
    expanded = [ctx.reshape(t, (*t.shape[:axis], 1, *t.shape[axis:])) for t in inputs]
    if len(expanded) == 1:
        return expanded
    return [ctx.network.add_concatenation(expanded, axis, name=ctx.name).get_output(0)]


@converter("UNPACK")
def unpack(ctx, op):
    x = ctx.input(0)
    axis = ctx.axis(ctx.option("Axis", 0), len(x.shape))
    parts = split(ctx, x, axis, [1] * x.shape[axis])
    return [ctx.reshape(t, (*x.shape[:axis], *x.shape[axis + 1:])) for t in parts]


@converter("TILE")
def tile(ctx, op):
    return [ctx.network.add_layer(ops.Tile(tuple(ctx.ints(1, "multiples"))), [ctx.input(0)], ctx.name).get_output(0)]


@converter("BROADCAST_TO")
def broadcast_to(ctx, op):
    x = ctx.input(0)
    shape = tuple(int(d) for d in np.broadcast_shapes(tuple(x.shape), tuple(ctx.ints(1, "shape"))))
    return [ctx.network.add_layer(ops.Expand(shape), [x], ctx.name).get_output(0)]


@converter("DEPTH_TO_SPACE")
def depth_to_space(ctx, op):
    x = ctx.input(0)
    n, h, w, c = x.shape
    b = int(ctx.option("BlockSize", 2))
    blocks = ctx.reshape(x, (n, h, w, b, b, c // (b * b)))
    return [ctx.network.add_shuffle(blocks, first_transpose=(0, 1, 3, 2, 4, 5),
                                    reshape_dims=(n, h * b, w * b, c // (b * b)), name=ctx.name).get_output(0)]


@converter("SPACE_TO_DEPTH")
def space_to_depth(ctx, op):
    x = ctx.input(0)
    n, h, w, c = x.shape
    b = int(ctx.option("BlockSize", 2))
    blocks = ctx.reshape(x, (n, h // b, b, w // b, b, c))
    return [ctx.network.add_shuffle(blocks, first_transpose=(0, 1, 3, 2, 4, 5),
                                    reshape_dims=(n, h // b, w // b, b * b * c), name=ctx.name).get_output(0)]


@converter("SPACE_TO_BATCH_ND")
def space_to_batch(ctx, op):
    x = ctx.input(0)
    block = ctx.ints(1, "block shape")
    paddings = np.asarray(ctx.require_value(2, "paddings"), dtype=np.int64).reshape(-1, 2)
    spatial = len(block)
    if paddings.any():
        lead, tail = (0,), (0,) * (len(x.shape) - 1 - spatial)
        pads = (*lead, *paddings[:, 0], *tail, *lead, *paddings[:, 1], *tail)
        x = ctx.network.add_layer(ops.Pad(tuple(int(p) for p in pads)), [x], ctx.name).get_output(0)
    n, sizes, rest = x.shape[0], x.shape[1:1 + spatial], x.shape[1 + spatial:]
    split_dims = [d for size, b in zip(sizes, block) for d in (size // b, b)]
    x = ctx.reshape(x, (n, *split_dims, *rest))
    # [n, h/b0, b0, w/b1, b1, ...] -> [b0, b1, n, h/b0, w/b1, ...]
    order = ([2 + 2 * i for i in range(spatial)] + [0] + [1 + 2 * i for i in range(spatial)]
             + list(range(1 + 2 * spatial, 1 + 2 * spatial + len(rest))))
    out = (n * int(np.prod(block)), *(s // b for s, b in zip(sizes, block)), *rest)
    return [ctx.network.add_shuffle(x, first_transpose=order, reshape_dims=out, name=ctx.name).get_output(0)]


@converter("BATCH_TO_SPACE_ND")
def batch_to_space(ctx, op):
    x = ctx.input(0)
    block = ctx.ints(1, "block shape")
    crops = np.asarray(ctx.require_value(2, "crops"), dtype=np.int64).reshape(-1, 2)
    spatial = len(block)
    batch, sizes, rest = x.shape[0], x.shape[1:1 + spatial], x.shape[1 + spatial:]
    n = batch // int(np.prod(block))
    x = ctx.reshape(x, (*block, n, *sizes, *rest))
    # [b0, b1, n, h, w, ...] -> [n, h, b0, w, b1, ...]
    order = ([spatial] + [d for i in range(spatial) for d in (spatial + 1 + i, i)]
             + list(range(1 + 2 * spatial, 1 + 2 * spatial + len(rest))))
    full = (n, *(s * b for s, b in zip(sizes, block)), *rest)
    y = ctx.network.add_shuffle(x, first_transpose=order, reshape_dims=full, name=ctx.name).get_output(0)
    if not crops.any():
        return [y]
    starts = (0, *(int(c) for c in crops[:, 0]), *(0,) * len(rest))
    shape = (n, *(f - int(c0) - int(c1) for f, (c0, c1) in zip(full[1:], crops)), *rest)
    return [ctx.network.add_slice(y, starts, shape, (1,) * len(full), name=ctx.name).get_output(0)]
