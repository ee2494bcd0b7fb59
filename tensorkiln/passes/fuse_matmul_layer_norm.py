"""GEMM + LayerNorm fusion: a fused matrix product (its bias and residual add already inside, fuse_vertical) whose
only reader is a LayerNorm over the last dim becomes one fused_matmul_layer_norm layer:

    y = a @ W + b + residual;  out = layer_norm(y) * gamma + beta
        =>  fused_matmul_layer_norm(a, W, b, residual, gamma, beta)

A transformer's attention output and FFN down-projections end this way (BERT-base: 24 of them), and so does every
post-norm encoder. The pre-norm sum then never travels through memory as a tensor of its own, and a step goes: at
batch 1 the engine is a chain of short kernels, each costing its launch and a wait. The CUDA tactics
(kernels/cuda/matmul_layer_norm_tactics.py) normalize in the GEMM's epilogue, or run the library GEMM and the row
kernel back to back where that is faster; the timer decides.

It runs after hoist_residual_bias, which moves a residual GEMM's bias into the LayerNorm before it and needs that
LayerNorm as a layer of its own. The product must have no activation (a GELU before a norm is no transformer's
form), a 2-D right operand and no transposed left one; the norm a constant scale and shift, one value per column.
"""
from __future__ import annotations

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from .manager import Pass, register_pass
from .pattern import Uses, make_layer, splice


def _plain_product(layer: Layer) -> bool:
    """A fused matmul with only a bias and a residual in its epilogue, on float data."""
    op = layer.op
    if layer.kind != ops.FusedMatMul.KIND or op.transpose_a or op.activation is not None or op.prelu:
        return False
    if op.post_activation is not None or op.int8_input_scale or op.int8_output_scale or op.residual_in_place:
        return False
    b = layer.inputs[1]
    return len(b.shape) == 2 and len(layer.inputs) <= 5 and layer.outputs[0].dtype.is_floating \
        and (len(layer.inputs) < 5 or layer.inputs[4] is None)


def _per_column(tensor: Tensor | None, columns: int) -> bool:
    return tensor is None or (tensor.is_constant and tensor.value.size in (1, columns))


def _last_dim_norm(norm: Layer | None, x: Tensor) -> bool:
    if norm is None or norm.kind != ops.LayerNorm.KIND or norm.inputs[0] is not x:
        return False
    rank, columns = len(x.shape), x.shape[-1] if x.shape else 0
    scale, shift = (list(norm.inputs) + [None, None])[1:3]
    return (rank >= 1 and norm.op.axis % rank == rank - 1 and scale is not None and _per_column(scale, columns)
            and _per_column(shift, columns) and norm.outputs[0].dtype == x.dtype)


@register_pass
class FuseMatMulLayerNorm(Pass):
    name = "fuse_matmul_layer_norm"

    def run(self, network: Network) -> bool:
        uses = Uses(network)
        pairs = []
        for gemm in network.layers:
            if not _plain_product(gemm):
                continue
            norm = uses.single_consumer(gemm.outputs[0])
            if _last_dim_norm(norm, gemm.outputs[0]):
                pairs.append((gemm, norm))
        for gemm, norm in pairs:
            # gemm(a, W, bias, residual) -> layer_norm(scale, shift)  =>  fused_matmul_layer_norm
            a, b, bias, residual = (list(gemm.inputs) + [None] * 4)[:4]
            scale, shift = (list(norm.inputs) + [None, None])[1:3]
            op = ops.FusedMatMulLayerNorm(transpose_b=gemm.op.transpose_b, residual=gemm.op.residual,
                                          epsilon=norm.op.epsilon)
            names = tuple(getattr(gemm, "fused_from", ()) or (gemm.name,)) + \
                tuple(getattr(norm, "fused_from", ()) or (norm.name,))
            fused = make_layer(network, op, [a, b, bias, residual if gemm.op.residual else None, scale, shift],
                               f"{names[0]}.norm", outputs=norm.outputs)
            fused.fused_from = tuple(dict.fromkeys(names))
            splice(network, [gemm, norm], [fused], before=norm)
            self.count("fused")
            self.log.append(f"{gemm.name} + {norm.name} -> {fused.name}")
        return bool(pairs)
