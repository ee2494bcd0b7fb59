"""cuBLASLt GEMM tactics with a fused epilogue: the bias (and a ReLU) applied by the GEMM itself
(torch.addmm / torch._addmm_activation reach cuBLASLt's bias and ReLU epilogues). The tactic timer weighs them
against the portable torch kernel (a matmul, then the epilogue as separate kernels).

A 1x1 convolution of NHWC activations is the same GEMM: [pixels, C] x [C, K], both operands views. cuDNN has no
bias-only fusion (conv + bias is two kernels there: MobileNetV2's projection layers), and at batch 1 cuBLAS's
small-M kernels (split-K among them) often beat cuDNN's."""
from __future__ import annotations

import torch

from ...ir import ops
from ..registry import kernel


def _supports(op, inputs) -> bool:
    a, b, bias = (list(inputs) + [None] * 3)[:3]
    return (a is not None and b is not None and bias is not None and a.dtype.is_floating and not op.transpose_a
            and len(b.shape) == 2 and len(bias.shape) == 1 and op.activation in (None, ops.ActivationType.RELU)
            and not op.prelu and not op.residual and op.post_activation is None)


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
    return [y.reshape(*a.shape[:-1], b.shape[-1])]


def _pointwise_conv_supports(op, inputs) -> bool:
    x, weight, bias = (list(inputs) + [None] * 3)[:3]
    return (x is not None and weight is not None and bias is not None and x.dtype.is_floating
            and len(x.shape) == 4 and tuple(weight.shape[1:]) == (x.shape[1], 1, 1) and len(bias.shape) == 1
            and op.groups == 1 and tuple(op.stride) == (1, 1) and not any(op.pads)
            and op.activation in (None, ops.ActivationType.RELU) and not op.prelu and not op.residual
            and op.post_activation is None)


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
    return [y.view(n, h, w, -1).permute(0, 3, 1, 2)]  # NCHW-shaped, channels-last in memory
