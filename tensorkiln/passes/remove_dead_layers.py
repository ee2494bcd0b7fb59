"""Dead-layer removal: layers none of whose outputs reach a network output."""
from __future__ import annotations

from ..ir.graph import Network
from .manager import Pass, register_pass


@register_pass
class RemoveDeadLayers(Pass):
    name = "remove_dead_layers"

    def run(self, network: Network) -> bool:
        live = {id(t) for t in network.outputs}
        kept = []
        for layer in reversed(network.layers):
            if any(id(t) in live for t in layer.outputs):
                kept.append(layer)
                live.update(id(t) for t in layer.inputs if t is not None)
            else:
                self.count("removed")
                self.log.append(f"{layer.name} ({layer.kind}) removed: no output reaches a network output")
        kept.reverse()
        changed = len(kept) != len(network.layers)
        network.layers = kept
        return changed
