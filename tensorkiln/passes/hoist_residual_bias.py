"""Residual bias hoisting: a GEMM that adds a residual right after its bias (a transformer's attention output and FFN
down-projections) leaves its bias to the LayerNorm that produced the residual. That LayerNorm's own bias takes the
constant in, and every other layer that reads the normalized tensor through constant weights takes it out again:

    s = LN(u) (beta)           =>  s' = LN(u) (beta + b) = s + b
    q = s @ Wq + bq            =>  q  = s' @ Wq + (bq - b @ Wq)
    y = h @ Wo + b + s         =>  y  = h @ Wo + s'

Exact in real arithmetic. It buys a residual GEMM with no bias, which cuBLAS computes as one GEMM accumulating into
its residual (beta = 1; kernels/cuda/cublas.py), where a bias takes a second kernel. BERT-base has 24 such GEMMs;
the first layer's attention output keeps its bias, its residual being the network's input.

The normalized tensor may only be read by the one residual GEMM and by GEMMs that take it as their left operand with
constant weights; it may not be a network output. The LayerNorm must normalize over its last axis alone, with a
constant scale and bias, and the residual GEMM's bias must be one constant per output column. The stored tensor
differs from the true one by b, so FP16 rounds it slightly differently (b is usually small beside it).
forward_residual_bias does the same for chains of linear convolutions, in the other direction. On an H200 (A/B,
`bench/ab.py --variant default= --variant nohoist=-hoist_residual_bias`) BERT-base b128 ran 6.77 against 7.21 ms,
b1 0.540 against 0.605 ms.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from .manager import Pass, register_pass
from .pattern import Uses, bias_values, replace_bias


def _constant_vector(tensor: Tensor | None, length: int) -> bool:
    return tensor is None or (tensor.is_constant and tensor.value.size in (1, length))


def _residual_gemm(layer: Layer) -> bool:
    """A fused GEMM whose residual is added right after its constant bias (no activation in between)."""
    if layer.kind != ops.FusedMatMul.KIND or not layer.op.residual or layer.op.activation is not None \
            or layer.op.prelu or layer.op.transpose_a:
        return False
    bias, residual = layer.inputs[2], layer.inputs[3]
    columns = layer.outputs[0].shape[-1]
    return (bias is not None and bias.is_constant and bias.value.size == columns and residual is not None
            and not any(t is residual for t in layer.inputs[:3]))


def _absorbs(layer: Layer, tensor: Tensor) -> bool:
    """Whether `layer` reads `tensor` only as its left operand, through constant 2-D weights."""
    if layer.kind != ops.FusedMatMul.KIND or layer.inputs[0] is not tensor or layer.op.transpose_a:
        return False
    weight = layer.inputs[1]
    return (weight.is_constant and weight.value.ndim == 2 and not any(t is tensor for t in layer.inputs[1:])
            and _constant_vector(layer.inputs[2], layer.outputs[0].shape[-1]))


def _hoistable_norm(norm: Layer) -> bool:
    if norm.kind != ops.LayerNorm.KIND or not norm.outputs[0].dtype.is_floating:
        return False
    channels = norm.outputs[0].shape[-1]
    return (norm.op.axis % len(norm.outputs[0].shape) == len(norm.outputs[0].shape) - 1
            and norm.inputs[1] is not None and _constant_vector(norm.inputs[1], channels)
            and _constant_vector((list(norm.inputs) + [None])[2], channels))


@register_pass
class HoistResidualBias(Pass):
    name = "hoist_residual_bias"

    def run(self, network: Network) -> bool:
        uses = Uses(network)
        changed = False
        for gemm in [layer for layer in network.layers if _residual_gemm(layer)]:
            residual = gemm.inputs[3]
            norm = residual.producer
            if norm is None or not _hoistable_norm(norm) or uses.is_output(residual):
                continue
            others = [reader for reader in uses.consumers(residual) if reader is not gemm]
            if not all(_absorbs(reader, residual) for reader in others):
                continue
            shift = gemm.inputs[2].value.astype(np.float64).reshape(-1)
            replace_bias(network, norm, bias_values(norm, shift.size) + shift)
            for reader in others:
                weight = reader.inputs[1].value.astype(np.float64)
                weight = weight.T if reader.op.transpose_b else weight  # [channels in, columns out]
                replace_bias(network, reader, bias_values(reader, weight.shape[1]) - shift @ weight)
            gemm.inputs[2] = None
            self.count("hoisted")
            self.log.append(f"{gemm.name}: bias hoisted into {norm.name}, taken out again by "
                            + (", ".join(r.name for r in others) or "no other reader"))
            changed = True
        return changed
