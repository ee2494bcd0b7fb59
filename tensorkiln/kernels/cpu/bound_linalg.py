"""Bound matrix products and max pooling: the work of their kernels on small layers is mostly Python and copies.

- A matrix product by a constant 2-D weight (fused with a bias over its last dim, or plain) is one GEMM on the input
  folded to rows: MKL's packed GEMM with the weight packed once (as onnxruntime's MLAS packs its weights), the bias
  added in it, then the kernel's epilogue. One thread, BERT-base's products at sequence 128: 768x2304 2.8 -> 2.4 ms
  (and 7.7 ms as torch.matmul ran it), 3072x768 7.6 -> 3.1 ms; MTCNN's 576x128 dense layer: 50 -> about 8 us.
- A max pooling whose padding torch's own pooling can do (symmetric, at most half the window) pads inside the
  pooling instead of copying the input into a padded one first; other paddings keep the kernel's F.pad, worked out
  once.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import PoolingType
from .bound import BoundInput, binder
from .bound_epilogue import make_epilogue
from .conv import torch_pad_arg
from .pooling import _MAX_POOL, _padded_extents


_PACKED = "_tensorkiln_mkl_packed"  # attribute of a weight tensor: {(rows, transposed): (packed, [N, K] weight)}


@functools.cache
def _mkl_available() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


def _linear(weight: torch.Tensor, transposed: bool, rows: int):
    """`x [rows, K] -> x @ W (+ bias)` for the constant weight (W = weight.T where `transposed`): MKL's packed GEMM
    with the weight packed once per row count and kept on the weight tensor (shared by the engine's contexts, as the
    oneDNN-packed convolution weights are), else torch.addmm on the weight as [N, K] transposed, the layout MKL
    reads fastest (a [K, N] row-major B ran at a third of the speed on BERT's 768x2304 product)."""
    cache = getattr(weight, _PACKED, None)
    if cache is None:
        cache = {}
        setattr(weight, _PACKED, cache)
    key = (rows, transposed)
    if key not in cache:
        rows_by_k = weight if transposed else weight.t()  # [N, K], a view: no second copy of the weight
        if _mkl_available():
            cache[key] = (torch.ops.mkl._mkl_reorder_linear_weight(rows_by_k.contiguous(), rows), rows_by_k)
        else:
            cache[key] = (None, rows_by_k.contiguous())
    packed, rows_by_k = cache[key]
    if packed is not None:
        # (the [N, K] weight is what MKL's op falls back to for another row count; the row count never changes here)
        linear = torch.ops.mkl._mkl_linear
        return lambda x, bias: linear(x, packed, rows_by_k, bias, rows)
    by_columns, addmm, mm = rows_by_k.t(), torch.addmm, torch.mm
    return lambda x, bias: mm(x, by_columns) if bias is None else addmm(bias, x, by_columns)


def _matmul_serves(a: BoundInput | None, b: BoundInput | None, transpose_a: bool, outputs) -> bool:
    return (a is not None and b is not None and b.value is not None and len(b.shape) == 2 and not transpose_a
            and len(a.shape) >= 2 and min(a.shape) > 0 and min(outputs[0].shape, default=1) >= 0
            and a.dtype is torch.float32 and b.dtype is torch.float32 and b.value.device.type == "cpu")


@binder(ops.FusedMatMul)
def bind_fused_matmul(op: ops.FusedMatMul, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    a, b, bias, residual, slope = (list(inputs) + [None] * 5)[:5]
    if not _matmul_serves(a, b, op.transpose_a, outputs):
        return None
    columns = b.shape[0] if op.transpose_b else b.shape[1]
    if bias is not None and (bias.value is None or tuple(bias.shape) != (columns,) or bias.dtype is not torch.float32):
        return None
    rows, out_shape = math.prod(a.shape[:-1]), tuple(outputs[0].shape)
    linear, bias_value = _linear(b.value, op.transpose_b, rows), None if bias is None else bias.value
    epilogue = make_epilogue(op, outputs[0], residual, slope)

    def call(args: list) -> list[torch.Tensor]:
        return [epilogue(linear(args[0].reshape(rows, -1), bias_value).view(out_shape), args)]

    return call


@binder(ops.MatrixMultiply)
def bind_matrix_multiply(op: ops.MatrixMultiply, inputs: Sequence[BoundInput | None],
                         outputs: Sequence[BoundInput]):
    a, b = (list(inputs) + [None, None])[:2]
    if not _matmul_serves(a, b, op.transpose_a, outputs):
        return None
    rows, out_shape = math.prod(a.shape[:-1]), tuple(outputs[0].shape)
    linear = _linear(b.value, op.transpose_b, rows)
    return lambda args: [linear(args[0].reshape(rows, -1), None).view(out_shape)]


@binder(ops.Pooling)
def bind_max_pooling(op: ops.Pooling, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    x = inputs[0]
    spatial = len(x.shape) - 2
    if op.type is not PoolingType.MAX or spatial not in _MAX_POOL or min(x.shape) < 0 or not x.dtype.is_floating_point:
        return None
    begin, ends = _padded_extents(op, x.shape[2:])
    pool, kernel, stride, dilation = _MAX_POOL[spatial], op.kernel, op.stride, op.dilation
    if outputs and _few_channels_many_windows(x, outputs[0]) and not any(begin) and max(ends) <= 0:
        return _max_of_shifted_windows(op, outputs[0].shape)
    if list(begin) == list(ends) and all(0 <= p <= k // 2 for p, k in zip(begin, kernel)):
        padding = tuple(begin)
        return lambda args: [pool(args[0], kernel, stride, padding, dilation)]
    pad_arg = torch_pad_arg(tuple(begin), tuple(ends))
    return lambda args: [pool(F.pad(args[0], pad_arg, value=-math.inf), kernel, stride, 0, dilation)]


# torch's NHWC max pooling runs across channels in vectors of 16 floats: with fewer channels most of each vector is
# idle, and MTCNN P-Net's 2x2 pooling of 10 channels at 118x158 takes 236 us. One elementwise maximum per window
# offset over the whole strided view takes 92 us there (3x3 windows: 400 -> 205 us), but loses on small outputs
# (28 channels at 22x22: 12 -> 45 us), so it serves 2-D NHWC pooling of few channels and many windows only.
FEW_POOLING_CHANNELS = 16
MANY_POOLING_OUTPUTS = 32768


def _few_channels_many_windows(x: BoundInput, output: BoundInput) -> bool:
    return (len(x.shape) == 4 == len(output.shape) and x.memory_format is torch.channels_last
            and x.shape[1] < FEW_POOLING_CHANNELS and math.prod(output.shape) >= MANY_POOLING_OUTPUTS)


def _max_of_shifted_windows(op: ops.Pooling, out_shape) -> Callable:
    """Max pooling as the elementwise maximum of the kernel's shifted, strided views of the (unpadded) input; NaN
    propagates as in torch's pooling."""
    (kernel_h, kernel_w), (stride_h, stride_w), (dilation_h, dilation_w) = op.kernel, op.stride, op.dilation
    out_h, out_w = out_shape[2], out_shape[3]
    offsets = [(i * dilation_h, j * dilation_w) for i in range(kernel_h) for j in range(kernel_w)]
    channels_last, maximum = torch.channels_last, torch.maximum

    def call(args: list) -> list[torch.Tensor]:
        x = args[0]
        if not x.is_contiguous(memory_format=channels_last):
            x = x.contiguous(memory_format=channels_last)
        views = [x[:, :, top:top + stride_h * (out_h - 1) + 1:stride_h, left:left + stride_w * (out_w - 1) + 1:stride_w]
                 for top, left in offsets]
        result = views[0].clone(memory_format=channels_last)
        for view in views[1:]:
            maximum(result, view, out=result)
        return [result]

    return call
