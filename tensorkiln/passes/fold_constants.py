"""Constant folding: a layer whose outputs all have values known at build time is replaced by those
values (shape arithmetic of exported models, transposed weights, ...)."""
from __future__ import annotations

from ..ir import ops
from ..ir.graph import Network
from .manager import Pass, register_pass


@register_pass
class FoldConstants(Pass):
    name = "fold_constants"

    def run(self, network: Network) -> bool:
        kept = []
        for layer in network.layers:
            # layer with only constant outputs  =>  constant tensors, no layer
            if layer.outputs and all(t.is_constant for t in layer.outputs):
                if layer.kind != ops.Constant.KIND:
                    self.count("folded")
                    self.log.append(f"{layer.name} ({layer.kind}) folded to a constant")
                for tensor in layer.outputs:
                    tensor.producer = None
                continue
            kept.append(layer)
        changed = len(kept) != len(network.layers)
        network.layers = kept
        return changed
