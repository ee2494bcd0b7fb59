"""Tactic selection. Tactic ids are stable strings: `<target>.<layer kind>.<implementation>`; ids are parsed,
never evaluated. With one candidate the choice is free; with several, the timer decides (tactics/timing.py)."""
from __future__ import annotations

import re
from typing import Callable

from ..errors import BuildError, EngineFormatError
from ..ir.graph import Layer
from ..kernels.registry import KernelEntry, candidates, find_kernel


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


TACTIC_PART = re.compile(r"[a-z0-9_]+", re.ASCII)  # each of the three parts of a tactic id


def parse_tactic(tactic: str) -> tuple[str, str, str]:
    """(target, layer kind, implementation) of a tactic id; ValueError unless it is exactly three dotted parts of
    lower-case letters, digits and underscores."""
    parts = tactic.split(".") if isinstance(tactic, str) else []
    if len(parts) != 3 or not all(TACTIC_PART.fullmatch(part) for part in parts):
        raise ValueError(f"tactic id {tactic!r} is not of the form <target>.<layer kind>.<implementation>")
    target, kind, impl = parts
    return target, kind, impl


def kernel_for_tactic(tactic: str, target: str):
    """The kernel function a tactic id names, for an engine built for `target`: a tactic of another target is
    refused (an engine file names its tactics; a CPU engine must never reach a CUDA kernel, or the reverse)."""
    try:
        tactic_target, kind, impl = parse_tactic(tactic)
    except ValueError as error:
        raise EngineFormatError(f"{error}; rebuild the engine with `kiln build`") from None
    if tactic_target != target:
        raise EngineFormatError(f"tactic {tactic!r} is a {tactic_target} tactic, but the engine is built for "
                                f"{target}; rebuild the engine with `kiln build`")
    entry = find_kernel(kind, target, impl)
    if entry is None:
        raise EngineFormatError(f"tactic {tactic!r} names no registered {target} kernel; rebuild the engine with "
                                "`kiln build`")
    return entry.fn
