"""Tactic selection. Tactic ids are stable strings: `<target>.<layer kind>.<implementation>`; ids are parsed,
never evaluated. With one candidate the choice is free; with several, the timer decides (tactics/timing.py)."""
from __future__ import annotations

from typing import Callable

from ..errors import BuildError
from ..ir.graph import Layer
from ..kernels.registry import KernelEntry, candidates, get_kernel


def tactic_id(entry: KernelEntry) -> str:
    return f"{entry.target}.{entry.kind}.{entry.impl}"


def layer_candidates(layer: Layer, target: str) -> list[KernelEntry]:
    found = candidates(layer.kind, target, layer.op, layer.inputs)
    if not found:
        raise BuildError(f"layer {layer.name!r} of kind {layer.kind!r} has no {target} kernel")
    return found


def select_tactic(layer: Layer, target: str, timer: Callable[[Layer, list[KernelEntry]], KernelEntry] | None = None
                  ) -> str:
    found = layer_candidates(layer, target)
    if len(found) == 1 or timer is None:
        return tactic_id(found[0])
    return tactic_id(timer(layer, found))


def kernel_for_tactic(tactic: str):
    """The kernel function a tactic id names."""
    target, kind, impl = tactic.split(".", 2)
    return get_kernel(kind, target, impl)
