"""Invariants of a network: topological order, unique names, marked outputs reachable, shapes consistent."""
from __future__ import annotations

from .graph import Network


class InvariantError(AssertionError):
    pass


def verify(network: Network) -> None:
    available: set[int] = {id(t) for t in network.inputs}
    names: set[str] = {t.name for t in network.inputs}
    layer_names: set[str] = set()
    for layer in network.layers:
        if layer.name in layer_names:
            raise InvariantError(f"layer name {layer.name!r} is used twice")
        layer_names.add(layer.name)
        for tensor in layer.inputs:
            if tensor is None or tensor.is_constant:
                continue
            if id(tensor) not in available:
                raise InvariantError(f"layer {layer.name!r} reads {tensor.name!r} before it is produced")
        for tensor in layer.outputs:
            if tensor.producer is not layer:
                raise InvariantError(f"tensor {tensor.name!r} does not name {layer.name!r} as its producer")
            if tensor.name in names:
                raise InvariantError(f"tensor name {tensor.name!r} is used twice")
            if len(tensor.dim_names) != len(tensor.shape):
                raise InvariantError(f"tensor {tensor.name!r} has {len(tensor.dim_names)} dim names "
                                     f"for {len(tensor.shape)} dims")
            names.add(tensor.name)
            available.add(id(tensor))
    for tensor in network.outputs:
        if id(tensor) not in available and not tensor.is_constant:
            raise InvariantError(f"output {tensor.name!r} is not produced by any layer")
