"""CumProd, Compress, ReverseSequence, TensorScatter (KV-cache writes) and BitCast."""
from __future__ import annotations

import torch

from ...ir import ops
from ...ir.infer import dynamic_size
from ..registry import kernel


@kernel(ops.CumulativeProduct)
def cumulative_product(op: ops.CumulativeProduct, inputs):
    x = inputs[0]
    axis = op.axis % x.dim()
    y = x.flip(axis) if op.reverse else x
    if op.exclusive:  # shift by one: the first product is the empty one
        ones = torch.ones_like(y.narrow(axis, 0, 1))
        y = torch.cat([ones, y.narrow(axis, 0, y.shape[axis] - 1)], dim=axis)
    y = torch.cumprod(y, dim=axis).to(x.dtype)
    return [y.flip(axis) if op.reverse else y]


@kernel(ops.Compress)
def compress(op: ops.Compress, inputs):
    x, condition = inputs
    if op.axis is None:
        x, axis = x.reshape(-1), 0
    else:
        axis = op.axis % x.dim()
    if x.device.type == "meta":
        shape = list(x.shape)
        shape[axis] = dynamic_size()
        return [torch.empty(shape, dtype=x.dtype, device="meta")]
    # a condition shorter than the axis keeps nothing past its end
    keep = torch.nonzero(condition.reshape(-1)[: x.shape[axis]].bool()).reshape(-1)
    return [torch.index_select(x, axis, keep)]


@kernel(ops.ReverseSequence)
def reverse_sequence(op: ops.ReverseSequence, inputs):
    x, lengths = inputs
    time = torch.arange(x.shape[op.time_axis], device=x.device).reshape(-1, 1)  # [T, 1]
    lengths = lengths.reshape(1, -1).long()  # [1, B]
    source = torch.where(time < lengths, lengths - 1 - time, time)  # [T, B]: where step t reads from
    shape = [1] * x.dim()
    shape[op.time_axis], shape[op.batch_axis] = source.shape
    if op.time_axis > op.batch_axis:
        source = source.t()
        shape[op.batch_axis], shape[op.time_axis] = source.shape
    index = source.reshape(shape).expand(x.shape)
    return [torch.gather(x, op.time_axis, index)]


@kernel(ops.TensorScatter)
def tensor_scatter(op: ops.TensorScatter, inputs):
    cache, update, write_indices = (list(inputs) + [None])[:3]
    axis = op.axis % cache.dim()
    batch, steps = cache.shape[0], update.shape[axis]
    if write_indices is None:
        write_indices = torch.zeros(batch, dtype=torch.int64, device=cache.device)
    shape = [1] * cache.dim()
    shape[0] = batch
    position = write_indices.long().reshape(shape) + torch.arange(steps, device=cache.device).reshape(
        [steps if d == axis else 1 for d in range(cache.dim())])
    if op.circular:
        position = position % cache.shape[axis]
    return [cache.scatter(axis, position.expand(update.shape), update)]


@kernel(ops.BitCast)
def bitcast(op: ops.BitCast, inputs):
    x = inputs[0]
    if x.element_size() != op.to.torch.itemsize:  # torch reinterprets along a last dim of stride 1 only (not NHWC)
        x = x.contiguous()
    return [x.view(op.to.torch)]
