"""Data movement: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Gather, Expand,
Tile, Cast, CastLike, Pad, Identity, Dropout."""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ....ir.ops import PaddingMode
from ....network import resolve_reshape
from ..registry import converter
from ..types import onnx_to_datatype


def _reshape(ctx, node, x, dims):
    # dims are resolved already: add_shuffle would read a 0 left by Reshape's allowzero=1 as "copy the input dim"
    op = ops.Shuffle(reshape_dims=tuple(int(d) for d in dims))
    return ctx.network.add_layer(op, [x], ctx.name(node)).get_output(0)


@converter("Reshape")
def reshape(ctx, node):
    x = ctx.input(node, 0)
    target = ctx.attr(node, "shape") if ctx.opset < 5 else ctx.ints(node, 1, "shape")
    allow_zero = bool(ctx.attr(node, "allowzero", 0))
    return [_reshape(ctx, node, x, resolve_reshape(x.shape, target, allow_zero_copy=not allow_zero))]


@converter("Flatten")
def flatten(ctx, node):
    x = ctx.input(node, 0)
    axis = ctx.attr(node, "axis", 1)
    axis = axis + len(x.shape) if axis < 0 else axis  # range [-rank, rank]
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [_reshape(ctx, node, x, (rows, int(np.prod(x.shape[axis:], dtype=np.int64))))]


@converter("Transpose")
def transpose(ctx, node):
    x = ctx.input(node, 0)
    perm = ctx.attr(node, "perm", list(reversed(range(len(x.shape)))))
    return [ctx.network.add_shuffle(x, first_transpose=perm, name=ctx.name(node)).get_output(0)]


def _axes(ctx, node, index):
    """Axes from the attribute (before opset 13) or the input."""
    if ctx.opset < 13:
        return ctx.attr(node, "axes")
    return ctx.ints(node, index, "axes") if ctx.input(node, index) is not None else None


def _distinct_axes(ctx, node, axes, rank: int) -> set[int]:
    """`axes` counted from 0, each in [-rank, rank) and none twice (as the spec requires; a % rank would quietly
    wrap an axis of 9 onto another, and a repeat would make Unsqueeze's output rank wrong)."""
    normalized = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
    if any(not 0 <= a < rank for a in normalized) or len(set(normalized)) != len(normalized):
        of = "an output" if node.op_type == "Unsqueeze" else "an input"
        raise ctx.error(node, f"axes {list(axes)} must be distinct and in [{-rank}, {rank - 1}] for {of} of rank {rank}")
    return set(normalized)


@converter("Squeeze")
def squeeze(ctx, node):
    x = ctx.input(node, 0)
    axes = _axes(ctx, node, 1)
    rank = len(x.shape)
    drop = _distinct_axes(ctx, node, axes, rank) if axes is not None else {i for i, d in enumerate(x.shape) if d == 1}
    if any(x.shape[a] != 1 for a in drop):
        raise ctx.shape_error(node, f"cannot squeeze axes {sorted(drop)} of shape {x.shape}: they are not all 1")
    return [_reshape(ctx, node, x, [d for i, d in enumerate(x.shape) if i not in drop])]


@converter("Unsqueeze")
def unsqueeze(ctx, node):
    x = ctx.input(node, 0)
    axes = _axes(ctx, node, 1)
    rank = len(x.shape) + len(axes)
    inserted = _distinct_axes(ctx, node, axes, rank)
    source = iter(x.shape)
    return [_reshape(ctx, node, x, [1 if i in inserted else next(source) for i in range(rank)])]


@converter("Concat")
def concat(ctx, node):
    return [ctx.network.add_concatenation(ctx.inputs(node), ctx.attr(node, "axis"), name=ctx.name(node)).get_output(0)]


@converter("Split")
def split(ctx, node):
    x = ctx.input(node, 0)
    axis = ctx.attr(node, "axis", 0) % len(x.shape)
    length, count = x.shape[axis], len(node.output)
    if ctx.opset >= 13 and ctx.input(node, 1) is not None:
        sizes = ctx.ints(node, 1, "split")
    elif ctx.opset < 13 and ctx.attr(node, "split") is not None:
        sizes = list(ctx.attr(node, "split"))
    else:
        given = ctx.attr(node, "num_outputs", count)
        if given != count or count < 1:  # onnxruntime too: num_outputs must name the node's outputs
            raise ctx.error(node, f"num_outputs {given} must be the node's number of outputs ({count}), at least 1")
        chunk = -(-length // count)  # ceil: the last chunk may be smaller (opset 18)
        sizes = [min(chunk, length - i * chunk) for i in range(count)]
    if sum(sizes) != length:
        raise ctx.shape_error(node, f"split sizes {sizes} do not add up to dim {axis} of {x.shape}")
    return ctx.network.add_layer(ops.Split(axis, tuple(sizes)), [x], ctx.name(node)).outputs


def _clamped_slice(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """Normalize negative indices and clamp as ONNX Slice specifies."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


@converter("Slice")
def slice_(ctx, node):
    x = ctx.input(node, 0)
    if ctx.opset < 10:
        starts, ends = ctx.attr(node, "starts"), ctx.attr(node, "ends")
        axes, steps = ctx.attr(node, "axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = ctx.ints(node, 1, "starts"), ctx.ints(node, 2, "ends")
        axes = ctx.ints(node, 3, "axes") if ctx.input(node, 3) is not None else list(range(len(starts)))
        steps = ctx.ints(node, 4, "steps") if ctx.input(node, 4) is not None else [1] * len(starts)
    rank = len(x.shape)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error(node, f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if any(not -rank <= a < rank for a in axes) or len(set(a % rank for a in axes)) != len(axes):
        raise ctx.error(node, f"axes {axes} are not distinct axes of the rank-{rank} input")
    if 0 in steps:
        raise ctx.error(node, f"steps {steps} hold a 0; a slice step must not be 0")
    axes = [a % rank for a in axes]
    # a step longer than the axis takes one element, as a step of the axis' length does: kept in range
    steps = [max(min(st, x.shape[a]), -x.shape[a]) or st for st, a in zip(steps, axes)]
    bounds = [_clamped_slice(s, e, st, x.shape[a]) for s, e, st, a in zip(starts, ends, steps, axes)]
    op = ops.Slice(tuple(b[0] for b in bounds), tuple(b[1] for b in bounds), tuple(axes), tuple(steps))
    return [ctx.network.add_layer(op, [x], ctx.name(node)).get_output(0)]


@converter("Gather")
def gather(ctx, node):
    return [ctx.network.add_gather(ctx.input(node, 0), ctx.input(node, 1), ctx.attr(node, "axis", 0),
                                   name=ctx.name(node)).get_output(0)]


@converter("Expand")
def expand(ctx, node):
    x = ctx.input(node, 0)
    try:
        shape = np.broadcast_shapes(x.shape, tuple(ctx.ints(node, 1, "shape")))
    except ValueError as error:
        raise ctx.shape_error(node, str(error)) from None
    return [ctx.network.add_layer(ops.Expand(tuple(shape)), [x], ctx.name(node)).get_output(0)]


@converter("Tile")
def tile(ctx, node):
    repeats = tuple(ctx.ints(node, 1, "repeats"))
    return [ctx.network.add_layer(ops.Tile(repeats), [ctx.input(node, 0)], ctx.name(node)).get_output(0)]


@converter("Cast")
def cast(ctx, node):
    to = onnx_to_datatype(ctx.attr(node, "to"), f"Cast node {ctx.name(node)!r}")
    return [ctx.network.add_cast(ctx.input(node, 0), to, name=ctx.name(node)).get_output(0)]


@converter("CastLike")
def cast_like(ctx, node):
    return [ctx.network.add_cast(ctx.input(node, 0), ctx.input(node, 1).dtype, name=ctx.name(node)).get_output(0)]


_PAD_MODES = {"constant": PaddingMode.CONSTANT, "reflect": PaddingMode.REFLECT, "edge": PaddingMode.EDGE,
              "wrap": PaddingMode.WRAP}


@converter("Pad")
def pad(ctx, node):
    x = ctx.input(node, 0)
    rank = len(x.shape)
    mode = ctx.choice(node, "mode", "constant", _PAD_MODES)
    if ctx.opset < 11:
        pads, value = list(ctx.attr(node, "pads")), float(ctx.attr(node, "value", 0.0))
    else:
        pads = ctx.ints(node, 1, "pads")
        value = ctx.require_constant(node, 2, "constant_value") if ctx.input(node, 2) is not None else None
        value = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
        if ctx.input(node, 3) is not None:  # opset 18: pads only for the listed axes
            axes = ctx.ints(node, 3, "axes")
            if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
                raise ctx.error(node, f"axes {axes} are not distinct axes of the rank-{rank} input")
            if len(pads) != 2 * len(axes):
                raise ctx.error(node, f"pads {pads} need 2 values for each of the {len(axes)} axes {axes}")
            axes = [a % rank for a in axes]
            full = [0] * (2 * rank)
            for i, axis in enumerate(axes):
                full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
            pads = full
    if len(pads) != 2 * rank:
        raise ctx.error(node, f"pads {pads} have {len(pads)} values; an input of rank {rank} needs {2 * rank} (the "
                              "begins, then the ends of every dimension)")
    return [ctx.network.add_layer(ops.Pad(tuple(pads), mode, value), [x], ctx.name(node)).get_output(0)]


@converter("Identity")
def identity(ctx, node):
    return [ctx.network.add_identity(ctx.input(node, 0), name=ctx.name(node)).get_output(0)]


@converter("Dropout")
def dropout(ctx, node):
    x = ctx.input(node, 0)
    outputs = [ctx.network.add_identity(x, name=ctx.name(node)).get_output(0)]
    if len(node.output) > 1 and node.output[1]:  # inference: the mask keeps everything
        outputs.append(ctx.network.add_constant(x.shape, np.ones(x.shape, dtype=bool)).get_output(0))
    return outputs
