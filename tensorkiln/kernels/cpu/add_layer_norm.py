"""An add, then LayerNorm over the last dim (ops.FusedAddLayerNorm): the reference semantics, and the portable kernel
every target can run; what the add and the LayerNorm it replaces computed, in one call."""
from __future__ import annotations

from ...ir import ops
from ..registry import kernel
from .matmul_layer_norm import last_dim_layer_norm


@kernel(ops.FusedAddLayerNorm)
def fused_add_layer_norm(op: ops.FusedAddLayerNorm, inputs):
    x, addend, scale, shift = (list(inputs) + [None] * 4)[:4]
    return [last_dim_layer_norm(x + addend, scale, shift, op.epsilon)]
