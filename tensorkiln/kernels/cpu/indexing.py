"""Indexing, sorting and scanning: argmax/argmin, top-k, cumulative sum, einsum, gather/scatter by
elements and by N-d index, one-hot, triangular masks, hardmax."""
from __future__ import annotations

import torch

from ...errors import InputError
from ...ir import ops
from ..registry import kernel


def positive_indices(indices: torch.Tensor, size, op_name: str) -> torch.Tensor:
    """`indices` into an axis of `size`, negative ones counted from the end; any outside [-size, size) is the
    caller's data (onnxruntime refuses it too), so it is one InputError, not torch's IndexError or a wrong row.

    Inside a CUDA graph capture the indices cannot be read on the host (a read invalidates the capture): there the
    check is left to the device, whose index kernels assert on an index out of range (the eager warm-up run before
    each capture has checked the host way)."""
    indices = indices.long()
    readable = not indices.is_meta and not (indices.is_cuda and torch.cuda.is_current_stream_capturing())
    if indices.numel() and readable and (int(indices.min()) < -size or int(indices.max()) >= size):
        bad = indices[(indices < -size) | (indices >= size)].reshape(-1)[0]
        raise InputError(f"{op_name}: index {int(bad)} is out of range for an axis of size {size} (valid indices "
                         f"are {-size} to {size - 1})")
    return torch.where(indices < 0, indices + size, indices)


@kernel(ops.ArgReduce)
def arg_reduce(op: ops.ArgReduce, inputs):
    x = inputs[0]
    axis = op.axis % x.dim()
    if op.select_last_index:  # the last of equal extremes: search the flipped tensor
        flipped = torch.flip(x, (axis,))
        index = (torch.argmax if op.largest else torch.argmin)(flipped, axis, keepdim=op.keep_dims)
        return [x.shape[axis] - 1 - index]
    return [(torch.argmax if op.largest else torch.argmin)(x, axis, keepdim=op.keep_dims)]


@kernel(ops.TopK)
def top_k(op: ops.TopK, inputs):
    x = inputs[0]
    if x.device.type == "meta":
        values, indices = torch.topk(x, op.k, op.axis, op.largest, op.sorted)
        return [values, indices]
    # ONNX breaks ties by the smaller index; a stable sort gives exactly that order
    order = torch.sort(x, dim=op.axis, descending=op.largest, stable=True).indices
    indices = order.narrow(op.axis % x.dim(), 0, op.k)
    return [torch.gather(x, op.axis, indices), indices]


@kernel(ops.CumulativeSum)
def cumulative_sum(op: ops.CumulativeSum, inputs):
    x = inputs[0]
    axis = op.axis % x.dim()
    if op.reverse:
        x = torch.flip(x, (axis,))
    result = torch.cumsum(x, axis).to(x.dtype)
    if op.exclusive:
        result = result - x
    if op.reverse:
        result = torch.flip(result, (axis,))
    return [result]


@kernel(ops.Einsum)
def einsum(op: ops.Einsum, inputs):
    return [torch.einsum(op.equation, *inputs)]


@kernel(ops.GatherElements)
def gather_elements(op: ops.GatherElements, inputs):
    data, indices = inputs
    axis = op.axis % data.dim()
    return [torch.gather(data, axis, positive_indices(indices, data.shape[axis], "GatherElements"))]


def _flat_nd_index(data_shape, indices: torch.Tensor, batch_dims: int, op_name: str) -> torch.Tensor:
    """Row of each N-d index in `data` reshaped to [batch..., prod(indexed dims), rest...]."""
    depth = indices.shape[-1]
    dims = data_shape[batch_dims:batch_dims + depth]
    flat = torch.zeros(indices.shape[:-1], dtype=torch.long, device=indices.device)
    for i, size in enumerate(dims):
        flat = flat * size + positive_indices(indices[..., i], size, op_name)
    return flat


@kernel(ops.GatherND)
def gather_nd(op: ops.GatherND, inputs):
    data, indices = inputs
    b, depth = op.batch_dims, indices.shape[-1]
    batch_shape = tuple(data.shape[:b])
    rest = tuple(data.shape[b + depth:])
    flat_data = data.reshape(batch_shape + (-1,) + rest)
    flat_index = _flat_nd_index(tuple(data.shape), indices, b, "GatherND").reshape(batch_shape + (-1,))
    batch = int(torch.tensor(batch_shape).prod()) if batch_shape else 1
    picked = torch.stack([flat_data.reshape((batch, -1) + rest)[i][flat_index.reshape(batch, -1)[i]]
                          for i in range(batch)])
    return [picked.reshape(tuple(indices.shape[:-1]) + rest)]


_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@kernel(ops.ScatterElements)
def scatter_elements(op: ops.ScatterElements, inputs):
    data, indices, updates = inputs
    axis = op.axis % data.dim()
    indices = positive_indices(indices, data.shape[axis], "ScatterElements")
    if op.reduction == "none":
        return [torch.scatter(data, axis, indices, updates)]
    return [torch.scatter_reduce(data, axis, indices, updates, _SCATTER_REDUCE[op.reduction], include_self=True)]


@kernel(ops.ScatterND)
def scatter_nd(op: ops.ScatterND, inputs):
    data, indices, updates = inputs
    depth = indices.shape[-1]
    rest = tuple(data.shape[depth:])
    flat = data.clone().reshape((-1,) + rest)
    rows = _flat_nd_index(tuple(data.shape), indices, 0, "ScatterND").reshape(-1)
    values = updates.reshape((-1,) + rest)
    if op.reduction == "none":
        flat[rows] = values
    else:
        index = rows.reshape((-1,) + (1,) * len(rest)).expand_as(values)
        flat = torch.scatter_reduce(flat, 0, index, values, _SCATTER_REDUCE[op.reduction], include_self=True)
    return [flat.reshape(data.shape)]


@kernel(ops.OneHot)
def one_hot(op: ops.OneHot, inputs):
    indices, values = inputs
    indices = indices.long()
    indices = torch.where(indices < 0, indices + op.depth, indices)
    valid = (indices >= 0) & (indices < op.depth)
    hot = torch.nn.functional.one_hot(torch.where(valid, indices, 0), op.depth) * valid.unsqueeze(-1)
    axis = op.axis % (indices.dim() + 1)
    hot = torch.movedim(hot, -1, axis)
    return [torch.where(hot.bool(), values[1], values[0])]


@kernel(ops.Trilu)
def trilu(op: ops.Trilu, inputs):
    x = inputs[0]
    return [torch.triu(x, op.k) if op.upper else torch.tril(x, op.k)]


@kernel(ops.Hardmax)
def hardmax(op: ops.Hardmax, inputs):
    x = inputs[0]
    axis = op.axis % x.dim()
    index = torch.argmax(x, axis, keepdim=True)
    return [torch.zeros_like(x).scatter(axis, index, 1)]
