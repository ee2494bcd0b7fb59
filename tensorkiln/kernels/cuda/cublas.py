"""cuBLASLt GEMM tactics with a fused epilogue: the bias (and a ReLU or tanh-form GELU) applied by the GEMM itself
(torch.addmm / torch._addmm_activation reach cuBLASLt's bias, ReLU and GELU epilogues). Another activation, a
residual add and a post activation, which cuBLASLt cannot fuse alongside the bias, follow as kernels of their own:
one more launch that can still beat a Triton GEMM (MobileNetV2's batch-1 projections, BERT's GELU projections).
Where the plan lets a layer store over its residual (plan/in_place.py), the GEMM accumulates into it instead
(cuBLAS's C with beta = 1). The tactic timer weighs them against the portable torch kernel (a matmul, then the
epilogue as separate kernels) and the Triton ones. Being plain PyTorch, they run on CPU tensors too:
tests/gpu/test_cublas_tactics.py checks them in CI.

A 1x1 convolution of NHWC activations is the same GEMM: [pixels, C] x [C, K], both operands views. cuDNN has no
bias-only fusion (conv + bias is two kernels there: MobileNetV2's projection layers), and at batch 1 cuBLAS's
small-M kernels (split-K among them) often beat cuDNN's."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ...ir import ops
from ..cpu.fused import apply_epilogue
from ..registry import kernel


def _epilogue_ok(op, residual, out_shape) -> bool:
    """cuBLASLt applies the bias (if any) and a ReLU or tanh-form GELU; any other activation, a residual of the
    output's shape and a post activation follow."""
    return not op.prelu and (not op.residual or (residual is not None and tuple(residual.shape) == tuple(out_shape)))


def _gemm(op, rows: torch.Tensor, columns: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
          as_rows: Callable[[torch.Tensor], torch.Tensor], as_output: Callable[[torch.Tensor], torch.Tensor]
          ) -> torch.Tensor:
    """rows @ columns (+ bias) with the layer's epilogue. `as_rows` views a tensor of the output's shape as the
    [rows, columns] matrix (RuntimeError where its layout does not allow), `as_output` the reverse."""
    target = _view_or_none(as_rows, residual) if op.residual_in_place else None
    if target is not None:  # store over the residual: each element is read (cuBLAS's C with beta = 1) first
        if op.activation is None:  # without a bias, one GEMM and nothing else
            target.addmm_(rows, columns)
            if bias is not None:
                target.add_(bias.to(rows.dtype))
        else:
            target.add_(_product(op, rows, columns, bias))
        y = apply_epilogue(dataclasses.replace(op, activation=None, residual=False), residual, None, None)
        return residual if y is residual else residual.copy_(y)  # a post activation that is not in place
    y = as_output(_product(op, rows, columns, bias))
    if not op.residual and op.post_activation is None:
        return y
    # the residual add and post activation as kernels of their own, in place on the fresh result
    return apply_epilogue(dataclasses.replace(op, activation=None), y, residual, None)


RELU = ops.ActivationType.RELU
_EPILOGUE_ACTIVATIONS = {RELU: False, ops.ActivationType.GELU_TANH: True}  # -> use_gelu


def runs_whole_epilogue(op, has_bias: bool) -> bool:
    """Whether these tactics run the layer's whole epilogue inside the one GEMM: a bias with no activation, a ReLU or
    the tanh GELU; or a residual alone, accumulated into. Anything else takes them a kernel more (the Triton TMA GEMM
    is a candidate there: triton_tactics.py)."""
    if op.post_activation is not None or op.prelu:
        return False
    if op.residual:
        return not has_bias and op.activation is None
    return op.activation is None or op.activation in _EPILOGUE_ACTIVATIONS


def _product(op, rows: torch.Tensor, columns: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A new activation(rows @ columns + bias): a ReLU or a GELU (tanh form) in cuBLASLt's epilogue where there is a
    bias, any other activation as a kernel of its own (BERT's erf GELU: cuBLASLt's GELU is the tanh form; see
    passes/approximate_gelu.py)."""
    # (on CPU tensors, which only the tests give it, torch's _addmm_activation computes the erf GELU instead)
    if bias is not None and op.activation in _EPILOGUE_ACTIVATIONS and (rows.is_cuda or op.activation is RELU):
        return torch._addmm_activation(bias.to(rows.dtype), rows, columns,
                                       use_gelu=_EPILOGUE_ACTIVATIONS[op.activation])
    y = torch.mm(rows, columns) if bias is None else torch.addmm(bias.to(rows.dtype), rows, columns)
    return apply_epilogue(dataclasses.replace(op, residual=False, post_activation=None), y, None, None)


def _view_or_none(view: Callable[[torch.Tensor], torch.Tensor], tensor: torch.Tensor | None) -> torch.Tensor | None:
    """`view(tensor)` where it is a dense row-major matrix over `tensor`'s memory (what a GEMM can write into)."""
    if tensor is None:
        return None
    try:
        matrix = view(tensor)
    except RuntimeError:  # a layout the view cannot describe: the result goes to a new tensor
        return None
    return matrix if matrix.is_contiguous() else None


def _supports(op, inputs) -> bool:
    a, b, bias, residual = (list(inputs) + [None] * 4)[:4]
    if a is None or b is None or not a.dtype.is_floating or op.transpose_a or len(b.shape) != 2:
        return False
    out_shape = (*a.shape[:-1], b.shape[0] if op.transpose_b else b.shape[1])
    return (bias is None or len(bias.shape) == 1) and _epilogue_ok(op, residual, out_shape)


@kernel(ops.FusedMatMul, target="cuda", impl="cublaslt_epilogue", supports=_supports, writes_over_residual=True)
def fused_matmul_cublaslt(op: ops.FusedMatMul, inputs):
    a, b, bias = inputs[:3]
    b = (b.t() if op.transpose_b else b).to(a.dtype)
    shape = (*a.shape[:-1], b.shape[-1])
    return [_gemm(op, a.reshape(-1, a.shape[-1]), b, bias, inputs[3] if op.residual else None,
                  lambda t: t.view(-1, shape[-1]), lambda y: y.reshape(shape))]


def _pointwise_conv_supports(op, inputs) -> bool:
    x, weight, bias, residual = (list(inputs) + [None] * 4)[:4]
    return (x is not None and weight is not None and x.dtype.is_floating and (bias is None or len(bias.shape) == 1)
            and len(x.shape) == 4 and tuple(weight.shape[1:]) == (x.shape[1], 1, 1)
            and op.groups == 1 and tuple(op.stride) == (1, 1) and not any(op.pads)
            and _epilogue_ok(op, residual, (x.shape[0], weight.shape[0], *x.shape[2:])))


@kernel(ops.FusedConvolution, target="cuda", impl="cublaslt_1x1", supports=_pointwise_conv_supports,
        writes_over_residual=True)
def pointwise_convolution_cublaslt(op: ops.FusedConvolution, inputs):
    x, weight, bias = inputs[:3]
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view of channels-last x (a copy of NCHW x)
    columns = weight.reshape(weight.shape[0], c).t().to(rows.dtype)
    # the result is NCHW-shaped and channels-last in memory, as NHWC engines hold their activations
    return [_gemm(op, rows, columns, bias, inputs[3] if op.residual else None,
                  lambda t: t.permute(0, 2, 3, 1).view(n * h * w, -1),
                  lambda y: y.view(n, h, w, -1).permute(0, 3, 1, 2))]


def _strided_pointwise_conv_supports(op, inputs) -> bool:
    """A strided 1x1 convolution (ResNet's downsample) whose input rows split evenly by the stride: its input pixels
    are then rows of a batched matrix with a leading dimension, one batch per output row (see below)."""
    x, weight, bias, residual = (list(inputs) + [None] * 4)[:4]
    if x is None or weight is None or not x.dtype.is_floating or len(x.shape) != 4 or op.groups != 1 or any(op.pads):
        return False
    (sh, sw), (h, w) = op.stride, x.shape[2:]
    return (tuple(weight.shape[1:]) == (x.shape[1], 1, 1) and (sh, sw) != (1, 1) and h % sh == 0 and w % sw == 0
            and (bias is None or len(bias.shape) == 1) and tuple(op.dilation) == (1, 1)
            and _epilogue_ok(op, residual, (x.shape[0], weight.shape[0], h // sh, w // sw)))


@kernel(ops.FusedConvolution, target="cuda", impl="cublaslt_strided_1x1", supports=_strided_pointwise_conv_supports)
def strided_pointwise_convolution_cublas(op: ops.FusedConvolution, inputs):
    """y[n, p, q] = x[n, p sh, q sw] @ W^T: of channels-last x, the pixels of output row (n, p) are Q rows of C
    values, sw C apart, and consecutive output rows lie sh W C apart. One strided-batched GEMM over N P such
    matrices reads them in place (where cuDNN's strided 1x1 convolution took 10.6 us at ResNet-50 b1 on an H200)."""
    x, weight, bias = inputs[:3]
    n, c, h, w = x.shape
    (sh, sw), p, q = op.stride, h // op.stride[0], w // op.stride[1]
    nhwc = x.permute(0, 2, 3, 1).contiguous()  # a view where x is channels-last (as the engine holds it)
    rows = nhwc.as_strided((n * p, q, c), (sh * w * c, sw * c, 1))
    columns = weight.reshape(weight.shape[0], c).t().to(rows.dtype)
    y = torch.bmm(rows, columns.expand(n * p, c, weight.shape[0])).view(n, p, q, -1).permute(0, 3, 1, 2)
    if bias is not None:
        y.add_(bias.to(y.dtype).view(1, -1, 1, 1))
    return [apply_epilogue(op, y, inputs[3] if op.residual else None, None)]
