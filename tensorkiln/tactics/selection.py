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


GENERATED_PREFIX = "triton_"  # implementations generated per shape (each config is one compile per shape)
# Where a tactic's kernel comes from, the first word of its implementation name (TensorRT's tactic sources):
# PyTorch's own kernels, cuDNN, cuBLASLt, and tensorkiln's generated Triton kernels.
TACTIC_SOURCES = ("torch", "cudnn", "cublaslt", "triton")
TACTIC_SOURCE_ALIASES = {"cublas": "cublaslt", "cublas_lt": "cublaslt"}  # trtexec's names for what cuBLASLt serves


def tactic_source(impl: str) -> str:
    """The source of an implementation name (a KernelEntry's impl, or the last part of a tactic id)."""
    return impl.split("_", 1)[0]


def family(entry: KernelEntry) -> str:
    """Configs of one generated kernel share a family: `triton_igemm_bm128_bn64...` -> `triton_igemm`."""
    return "_".join(entry.impl.split("_")[:2]) if entry.impl.startswith(GENERATED_PREFIX) else entry.impl


def prune_for_opt_level(found: list[KernelEntry], opt_level: int) -> list[KernelEntry]:
    """What the optimization level lets the timer try, bounding build time: level 1 times library tactics only,
    level 2 adds the first config of each generated kernel, levels 3 to 5 every config."""
    if opt_level >= 3:
        return found
    kept, seen = [], set()
    for entry in found:
        generated = entry.impl.startswith(GENERATED_PREFIX)
        if generated and (opt_level <= 1 or family(entry) in seen):
            continue
        seen.add(family(entry))
        kept.append(entry)
    return kept or found[:1]


def timed_candidates(layer: Layer, target: str, opt_level: int = 3,
                     disabled_sources: tuple[str, ...] = ()) -> list[KernelEntry]:
    """The tactics that compete for `layer`: its candidates less the disabled sources, pruned for the opt level."""
    found = layer_candidates(layer, target)
    enabled = [entry for entry in found if tactic_source(entry.impl) not in disabled_sources]
    if not enabled:
        sources = sorted({tactic_source(entry.impl) for entry in found})
        raise BuildError(f"layer {layer.name!r} of kind {layer.kind!r} has {target} kernels from "
                         f"{', '.join(sources)} only, and the build disables them; enable one "
                         f"(e.g. --tactic-sources=+{sources[0]})")
    return prune_for_opt_level(enabled, opt_level)


def select_tactic(layer: Layer, target: str, timer: Callable[[Layer, list[KernelEntry]], KernelEntry] | None = None,
                  opt_level: int = 3, disabled_sources: tuple[str, ...] = (),
                  found: list[KernelEntry] | None = None) -> str:
    """The tactic id for `layer`; `found`: its timed_candidates where the caller has them already."""
    found = found if found is not None else timed_candidates(layer, target, opt_level, disabled_sources)
    if len(found) == 1 or timer is None:
        return tactic_id(found[0])
    return tactic_id(timer(layer, found))


def kernel_for_tactic(tactic: str):
    """The kernel function a tactic id names."""
    target, kind, impl = tactic.split(".", 2)
    return get_kernel(kind, target, impl)
