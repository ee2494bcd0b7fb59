"""cuBLASLt GEMM tactics with a fused epilogue: the bias (and a ReLU) applied by the GEMM itself
(torch.addmm / torch._addmm_activation reach cuBLASLt's bias and ReLU epilogues). The tactic timer weighs them
against the portable torch kernel (a matmul, then the epilogue as separate kernels)."""
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
