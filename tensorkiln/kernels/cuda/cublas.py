"""cuBLASLt GEMM tactics with a fused epilogue: the bias (and a ReLU) applied by the GEMM itself
(torch.addmm / torch._addmm_activation reach cuBLASLt's bias and ReLU epilogues). A residual add and a post
activation, which cuBLASLt cannot fuse alongside the bias, follow as kernels of their own: one more small launch
that can still beat a Triton GEMM on small problems (MobileNetV2's batch-1 projections). The tactic timer weighs them
against the portable torch kernel (a matmul, then the epilogue as separate kernels) and the Triton ones.

A 1x1 convolution of NHWC activations is the same GEMM: [pixels, C] x [C, K], both operands views. cuDNN has no
bias-only fusion (conv + bias is two kernels there: MobileNetV2's projection layers), and at batch 1 cuBLAS's
small-M kernels (split-K among them) often beat cuDNN's."""
from __future__ import annotations

import dataclasses

import torch

from ...ir import ops
from ..cpu.fused import apply_epilogue
from ..registry import kernel


def _epilogue_ok(op, residual, out_shape) -> bool:
    """cuBLASLt applies the bias and a ReLU; a residual of the output's own shape and any post activation follow."""
    return (op.activation in (None, ops.ActivationType.RELU) and not op.prelu
            and (not op.residual or (residual is not None and tuple(residual.shape) == tuple(out_shape))))


def _rest_of_epilogue(op, y: torch.Tensor, inputs) -> torch.Tensor:
    """The residual add and post activation after the GEMM, in place on its fresh result."""
    if not op.residual and op.post_activation is None:
        return y
    return apply_epilogue(dataclasses.replace(op, activation=None), y, inputs[3] if op.residual else None, None)


def _supports(op, inputs) -> bool:
    a, b, bias, residual = (list(inputs) + [None] * 4)[:4]
    if a is None or b is None or bias is None or not a.dtype.is_floating or op.transpose_a or len(b.shape) != 2:
        return False
    out_shape = (*a.shape[:-1], b.shape[0] if op.transpose_b else b.shape[1])
    return len(bias.shape) == 1 and _epilogue_ok(op, residual, out_shape)


@kernel(ops.FusedMatMul, target="cuda", impl="cublaslt_epilogue", supports=_supports)
def fused_matmul_cublaslt(op: ops.FusedMatMul, inputs):
    a, b, bias = inputs[:3]
    b = b.t() if op.transpose_b else b
    rows = a.reshape(-1, a.shape[-1])
    bias = bias.to(rows.dtype)
    if op.activation is ops.ActivationType.RELU:
        y = torch._addmm_activation(bias, rows, b.to(rows.dtype))
    else:
        y = torch.addmm(bias, rows, b.to(rows.dtype))
    return [_rest_of_epilogue(op, y.reshape(*a.shape[:-1], b.shape[-1]), inputs)]


def _pointwise_conv_supports(op, inputs) -> bool:
    x, weight, bias, residual = (list(inputs) + [None] * 4)[:4]
    return (x is not None and weight is not None and bias is not None and x.dtype.is_floating
            and len(x.shape) == 4 and tuple(weight.shape[1:]) == (x.shape[1], 1, 1) and len(bias.shape) == 1
            and op.groups == 1 and tuple(op.stride) == (1, 1) and not any(op.pads)
            and _epilogue_ok(op, residual, (x.shape[0], weight.shape[0], *x.shape[2:])))


@kernel(ops.FusedConvolution, target="cuda", impl="cublaslt_1x1", supports=_pointwise_conv_supports)
def pointwise_convolution_cublaslt(op: ops.FusedConvolution, inputs):
    x, weight, bias = inputs[:3]
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view of channels-last x (a copy of NCHW x)
    columns = weight.reshape(weight.shape[0], c).t().to(rows.dtype)
    bias = bias.to(rows.dtype)
    if op.activation is ops.ActivationType.RELU:
        y = torch._addmm_activation(bias, rows, columns)
    else:
        y = torch.addmm(bias, rows, columns)
    return [_rest_of_epilogue(op, y.view(n, h, w, -1).permute(0, 3, 1, 2), inputs)]  # channels-last in memory
