"""Layers that move data without arithmetic: shuffle, concatenation, gather, slice, split, expand,
tile, cast, pad and identity."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import PaddingMode
from ..registry import kernel
from .indexing import positive_indices


@kernel(ops.Identity)
def identity(op, inputs):
    return [inputs[0]]


@kernel(ops.Shuffle)
def shuffle(op: ops.Shuffle, inputs):
    x = inputs[0]
    if op.first_transpose is not None:
        x = x.permute(op.first_transpose)
    if op.reshape_dims is not None:
        x = x.reshape(op.reshape_dims)
    if op.second_transpose is not None:
        x = x.permute(op.second_transpose)
    return [x]


@kernel(ops.Concatenation)
def concatenation(op: ops.Concatenation, inputs):
    return [torch.cat([t for t in inputs], dim=op.axis)]


@kernel(ops.Gather)
def gather(op: ops.Gather, inputs):
    data, indices = inputs
    axis = op.axis % data.dim()
    indices = positive_indices(indices, data.shape[axis], "Gather")  # data-dependent: only the kernel can tell
    picked = torch.index_select(data, axis, indices.reshape(-1))
    return [picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])]


@kernel(ops.Slice)
def slice_(op: ops.Slice, inputs):
    x = inputs[0]
    for start, end, axis, step in zip(op.starts, op.ends, op.axes, op.steps):
        if step > 0:
            index = [slice(None)] * x.dim()
            index[axis] = slice(start, end, step)
            x = x[tuple(index)]
        else:  # torch has no negative-step slicing: gather the positions explicitly
            # an empty range (start <= end) is an empty result, which torch.arange refuses for a negative step
            positions = torch.arange(start, min(start, end), step, device=x.device, dtype=torch.long)
            x = torch.index_select(x, axis, positions)
    return [x]


@kernel(ops.Split)
def split(op: ops.Split, inputs):
    return list(torch.split(inputs[0], list(op.sizes), dim=op.axis))


@kernel(ops.Expand)
def expand(op: ops.Expand, inputs):
    x = inputs[0]
    x = x.reshape((1,) * (len(op.shape) - x.dim()) + tuple(x.shape))
    return [x.expand(op.shape)]


@kernel(ops.Tile)
def tile(op: ops.Tile, inputs):
    return [inputs[0].repeat(op.repeats)]


@kernel(ops.Cast)
def cast(op: ops.Cast, inputs):
    return [inputs[0].to(op.to.torch)]


def _pad_positions(size: int, before: int, after: int, mode: PaddingMode, device) -> torch.Tensor:
    """Source index of every output position of one padded dim (reflect, edge or wrap)."""
    positions = torch.arange(-before, size + after, device=device)
    if mode is PaddingMode.EDGE:
        return positions.clamp(0, size - 1)
    if mode is PaddingMode.WRAP:
        return positions % size
    period = 2 * (size - 1) if size > 1 else 1  # REFLECT, without repeating the edge
    folded = positions.abs() % period
    return torch.where(folded >= size, period - folded, folded)


@kernel(ops.Pad)
def pad(op: ops.Pad, inputs):
    x = inputs[0]
    rank = x.dim()
    begin, end = op.pads[:rank], op.pads[rank:]
    if op.mode is PaddingMode.CONSTANT:
        pad_arg: list[int] = []
        for b, e in zip(reversed(begin), reversed(end)):
            pad_arg += [b, e]
        value = op.value if x.is_floating_point() else int(op.value)
        return [F.pad(x, pad_arg, value=value)]
    for axis in range(rank):
        if begin[axis] or end[axis]:
            positions = _pad_positions(x.shape[axis], begin[axis], end[axis], op.mode, x.device)
            x = torch.index_select(x, axis, positions)
    return [x]
