"""A matrix product with its bias and residual add, then LayerNorm over the last dim (ops.FusedMatMulLayerNorm):
the reference semantics, and the portable kernel every target can run. It computes exactly what the two layers it
replaces computed (the fused matmul's kernel, then the LayerNorm's), so that fusing changes no output on the CPU."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel
from .bound import BoundInput, binder
from .bound_linalg import bind_fused_matmul
from .fused import fused_matmul


def matmul_part(op: ops.FusedMatMulLayerNorm) -> ops.FusedMatMul:
    """The fused matrix product that the layer starts with (no activation: the pass fuses none)."""
    return ops.FusedMatMul(transpose_b=op.transpose_b, residual=op.residual)


def last_dim_layer_norm(y: torch.Tensor, scale, shift, epsilon: float) -> torch.Tensor:
    """LayerNorm over the last dim, scale and shift one value per column (or one value)."""
    width = y.shape[-1:]
    return F.layer_norm(y, width, scale.expand(width), None if shift is None else shift.expand(width), epsilon)


@kernel(ops.FusedMatMulLayerNorm)
def fused_matmul_layer_norm(op: ops.FusedMatMulLayerNorm, inputs):
    a, b, bias, residual, scale, shift = (list(inputs) + [None] * 6)[:6]
    y = fused_matmul(matmul_part(op), [a, b, bias, residual, None])[0]
    return [last_dim_layer_norm(y, scale, shift, op.epsilon)]


@binder(ops.FusedMatMulLayerNorm)
def bind_fused_matmul_layer_norm(op: ops.FusedMatMulLayerNorm, inputs: Sequence[BoundInput | None],
                                 outputs: Sequence[BoundInput]):
    """The fused matmul's bound call (oneDNN or MKL with a packed weight), then the norm: the CPU engine keeps the
    speed the two steps had."""
    scale, shift = (list(inputs) + [None] * 6)[4:6]
    product = bind_fused_matmul(matmul_part(op), list(inputs[:4]) + [None], outputs)
    if product is None or scale is None or scale.value is None or (shift is not None and shift.value is None):
        return None
    scale_value, shift_value = scale.value, None if shift is None else shift.value

    def call(args: list) -> list[torch.Tensor]:
        return [last_dim_layer_norm(product(args)[0], scale_value, shift_value, op.epsilon)]

    return call
