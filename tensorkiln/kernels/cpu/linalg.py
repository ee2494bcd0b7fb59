"""Matrix products, fully connected, softmax, layer normalization and reductions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import ReduceOperation as R
from ..registry import kernel


@kernel(ops.MatrixMultiply)
def matrix_multiply(op: ops.MatrixMultiply, inputs):
    a, b = inputs
    if op.transpose_a:
        a = a.transpose(-1, -2)
    if op.transpose_b:
        b = b.transpose(-1, -2)
    return [torch.matmul(a, b)]


@kernel(ops.FullyConnected)
def fully_connected(op: ops.FullyConnected, inputs):
    x, weight, bias = (list(inputs) + [None])[:3]
    return [F.linear(x.flatten(op.axis), weight, bias)]


# torch's CPU softmax over the innermost axis costs about 45 ns a row where the axis is shorter than a vector of
# 16 floats (MTCNN P-Net's 4,125 rows of 2 classes: 197 us); over an outer axis it runs across rows in vectors (31
# us, a copy included). So a short innermost axis with many rows is moved outermost first (the result is a view in
# the moved layout; the input is copied only where the axis was innermost in memory).
SHORT_SOFTMAX_AXIS = 16
MANY_SOFTMAX_ROWS = 256


@kernel(ops.Softmax)
def softmax(op: ops.Softmax, inputs):
    x = inputs[0]
    fn = torch.log_softmax if op.log else torch.softmax
    if x.dim() >= 2:
        axis = op.axis % x.dim()
        size = x.shape[axis]
        if 1 < size < SHORT_SOFTMAX_AXIS and x.numel() >= MANY_SOFTMAX_ROWS * size:
            return [fn(x.movedim(axis, 0).contiguous(), 0).movedim(0, axis)]
    return [fn(x, op.axis)]


@kernel(ops.LayerNorm)
def layer_norm(op: ops.LayerNorm, inputs):
    x, weight, bias = (list(inputs) + [None])[:3]
    normalized = tuple(x.shape[op.axis % x.dim():])
    if weight is not None:
        weight = weight.expand(normalized)
    if bias is not None:
        bias = bias.expand(normalized)
    return [F.layer_norm(x, normalized, weight, bias, op.epsilon)]


def _prod(x, dims, keep):
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim, keepdim=keep)
    return x


def _mean(x, dims, keep):
    if x.is_floating_point():
        return torch.mean(x, dims, keepdim=keep)
    # integers: the sum divided by the count, truncated toward zero as onnxruntime does (torch.mean refuses them)
    count = 1
    for dim in dims:
        count *= x.shape[dim]
    return torch.div(torch.sum(x, dims, keepdim=keep), count, rounding_mode="trunc")


_REDUCE = {
    R.SUM: lambda x, d, k: torch.sum(x, d, keepdim=k),
    R.MEAN: lambda x, d, k: _mean(x, d, k),
    R.MAX: lambda x, d, k: torch.amax(x, d, keepdim=k),
    R.MIN: lambda x, d, k: torch.amin(x, d, keepdim=k),
    R.PROD: _prod,
    R.L1: lambda x, d, k: torch.sum(x.abs(), d, keepdim=k),
    R.L2: lambda x, d, k: torch.sqrt(torch.sum(x * x, d, keepdim=k)),
    R.LOG_SUM: lambda x, d, k: torch.log(torch.sum(x, d, keepdim=k)),
    R.LOG_SUM_EXP: lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
    R.SUM_SQUARE: lambda x, d, k: torch.sum(x * x, d, keepdim=k),
}


@kernel(ops.Reduce)
def reduce(op: ops.Reduce, inputs):
    x = inputs[0]
    dims = tuple(a % x.dim() for a in op.axes) if op.axes else tuple(range(x.dim()))
    if x.dim() == 0:
        return [x.clone()]
    result = _REDUCE[op.operation](x, dims, op.keep_dims)
    return [result.to(x.dtype) if x.dtype != torch.bool else result]  # torch widens integer sums
