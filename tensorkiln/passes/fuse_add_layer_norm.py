"""Add + LayerNorm fusion: a sum read only by a LayerNorm over the last dim becomes one fused_add_layer_norm layer,
where no GEMM can take the norm (fuse_matmul_layer_norm runs first):

    e = x + c1 + c2;  out = layer_norm(e) * gamma + beta   =>  fused_add_layer_norm(x, c1 + c2, gamma, beta)

A transformer's embeddings end this way: BERT adds its word, token-type and position embeddings (the last two are
constants once fold_constants has evaluated their gathers of constant ids), DistilBERT its word and position
embeddings, and normalizes the sum. The sum then never travels through memory, and a kernel goes.

The sum may be a tree of Add layers, each read only inside it, whose leaves are the data x (of the output's shape),
at most one other tensor, and constants; the constants are added together at build time (in float64, then rounded
once: (x + c1) + c2 becomes x + (c1 + c2), which may differ from the exported order in the last bit). The norm must
have a constant scale and shift, one value per column.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..ir.ops import ElementWiseOperation as E
from .manager import Pass, register_pass
from .pattern import Uses, make_constant, make_layer, splice


def _is_sum(layer: Layer | None) -> bool:
    return layer is not None and layer.kind == ops.ElementWise.KIND and layer.op.operation is E.SUM


def _sum_tree(root: Layer, uses: Uses) -> tuple[list[Layer], list[Tensor]] | None:
    """The Add layers of the tree under `root` (in network order later) and its leaves; None where an inner sum is
    read outside the tree."""
    layers, leaves, pending = [], [], [root]
    while pending:
        layer = pending.pop()
        layers.append(layer)
        for tensor in layer.inputs:
            inner = tensor.producer
            if _is_sum(inner) and uses.single_consumer(tensor) is layer:
                pending.append(inner)
            else:
                leaves.append(tensor)
    return layers, leaves


def _per_column(tensor: Tensor | None, columns: int) -> bool:
    return tensor is None or (tensor.is_constant and tensor.value.size in (1, columns))


def _operands(network: Network, leaves: list[Tensor], out: Tensor) -> tuple[Tensor, Tensor] | None:
    """(x, addend) of the fused layer, or None where the leaves are not data plus one addend."""
    data = [t for t in leaves if not t.is_constant]
    constants = [t for t in leaves if t.is_constant]
    x = next((t for t in data if t.shape == out.shape and t.dtype == out.dtype), None)
    if x is None or len(data) > 2 or (len(data) == 2 and constants) or (len(data) == 1 and not constants):
        return None
    if len(data) == 2:
        addend = data[1] if data[0] is x else data[0]
    else:
        total = sum(np.asarray(t.value, dtype=np.float64) for t in constants)
        addend = make_constant(network, np.asarray(total, dtype=out.dtype.numpy), "add_layer_norm.addend")
    try:
        if np.broadcast_shapes(tuple(addend.shape), tuple(out.shape)) != tuple(out.shape):
            return None
    except ValueError:
        return None
    return x, addend


@register_pass
class FuseAddLayerNorm(Pass):
    name = "fuse_add_layer_norm"

    def run(self, network: Network) -> bool:
        changed = False
        for norm in [layer for layer in network.layers if layer.kind == ops.LayerNorm.KIND]:
            uses = Uses(network)
            x = norm.inputs[0]
            rank = len(x.shape)
            scale, shift = (list(norm.inputs) + [None, None])[1:3]
            if rank < 1 or norm.op.axis % rank != rank - 1 or scale is None or not x.dtype.is_floating:
                continue
            if not (_per_column(scale, x.shape[-1]) and _per_column(shift, x.shape[-1])):
                continue
            if not _is_sum(x.producer) or uses.single_consumer(x) is not norm:
                continue
            layers, leaves = _sum_tree(x.producer, uses)
            operands = _operands(network, leaves, x)
            if operands is None:
                continue
            # x + addends -> layer_norm  =>  fused_add_layer_norm(x, addend)
            fused = make_layer(network, ops.FusedAddLayerNorm(norm.op.epsilon), [*operands, scale, shift],
                               f"{norm.name}.add", outputs=norm.outputs)
            fused.fused_from = tuple(dict.fromkeys(name for layer in [*reversed(layers), norm]
                                                   for name in (getattr(layer, "fused_from", ()) or (layer.name,))))
            splice(network, [*layers, norm], [fused], before=norm)
            self.count("fused")
            self.log.append(" + ".join(fused.fused_from) + f" -> {fused.name}")
            changed = True
        return changed
