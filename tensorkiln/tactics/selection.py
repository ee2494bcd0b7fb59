"""Tactic selection. Tactic ids are stable strings: `<target>.<layer kind>.<implementation>`."""
from __future__ import annotations

from ..errors import BuildError
from ..ir.graph import Layer
from ..kernels.registry import has_kernel


def tactic_id(kind: str, target: str) -> str:
    return f"{target}.{kind}.torch"


def select_tactic(layer: Layer, target: str) -> str:
    if not has_kernel(layer.kind, target):
        raise BuildError(f"layer {layer.name!r} of kind {layer.kind!r} has no {target} kernel")
    return tactic_id(layer.kind, target)


def kernel_for_tactic(tactic: str):
    """The kernel function a tactic id names (ids are parsed, never evaluated)."""
    from ..kernels.registry import get_kernel

    target, kind, _implementation = tactic.split(".", 2)
    return get_kernel(kind, target)
