"""Bound matrix products and max pooling: the work of their kernels on small layers is mostly Python and copies.

- A fused matrix product by a constant 2-D weight, with a bias over its last dim, is one torch.addmm on the input
  folded to rows (MKL adds the bias in the GEMM: one pass over the result less), then the kernel's epilogue. MTCNN's
  576x128 dense layer: 50 -> about 15 us.
- A max pooling whose padding torch's own pooling can do (symmetric, at most half the window) pads inside the
  pooling instead of copying the input into a padded one first; other paddings keep the kernel's F.pad, worked out
  once.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import PoolingType
from .bound import BoundInput, binder
from .bound_epilogue import make_epilogue
from .conv import torch_pad_arg
from .pooling import _MAX_POOL, _padded_extents


@binder(ops.FusedMatMul)
def bind_fused_matmul(op: ops.FusedMatMul, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    a, b, bias, residual, slope = (list(inputs) + [None] * 5)[:5]
    if (a is None or b is None or b.value is None or len(b.shape) != 2 or op.transpose_a or len(a.shape) < 2
            or min(a.shape) < 0 or min(outputs[0].shape, default=0) < 0
            or any(t is not None and t.dtype is not torch.float32 for t in (a, b, bias))):
        return None
    weight = b.value.t() if op.transpose_b else b.value  # [K, N]; MKL reads either layout
    columns = weight.shape[1]
    if bias is not None and (bias.value is None or tuple(bias.shape) != (columns,)):
        return None
    rows, out_shape = math.prod(a.shape[:-1]), tuple(outputs[0].shape)
    bias_value = torch.zeros(columns) if bias is None else bias.value
    epilogue = make_epilogue(op, outputs[0], residual, slope)
    addmm = torch.addmm

    def call(args: list) -> list[torch.Tensor]:
        return [epilogue(addmm(bias_value, args[0].reshape(rows, -1), weight).view(out_shape), args)]

    return call


@binder(ops.Pooling)
def bind_max_pooling(op: ops.Pooling, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    x = inputs[0]
    spatial = len(x.shape) - 2
    if op.type is not PoolingType.MAX or spatial not in _MAX_POOL or min(x.shape) < 0 or not x.dtype.is_floating_point:
        return None
    begin, ends = _padded_extents(op, x.shape[2:])
    pool, kernel, stride, dilation = _MAX_POOL[spatial], op.kernel, op.stride, op.dilation
    if list(begin) == list(ends) and all(0 <= p <= k // 2 for p, k in zip(begin, kernel)):
        padding = tuple(begin)
        return lambda args: [pool(args[0], kernel, stride, padding, dilation)]
    pad_arg = torch_pad_arg(tuple(begin), tuple(ends))
    return lambda args: [pool(F.pad(args[0], pad_arg, value=-math.inf), kernel, stride, 0, dilation)]
