"""The kernel registry: (layer kind, target, implementation) -> kernel, filled by the `kernel` decorator.

A kernel is `fn(op, inputs) -> list of outputs`, where `op` is the layer's attribute dataclass and
`inputs` holds torch tensors (None for an omitted optional input). The CPU kernels, written in plain
PyTorch, are device-agnostic: they also serve every other target as its `torch` implementation, act as
the reference semantics of each layer kind, and, run on the meta device, as shape and dtype inference.
Targets may add faster implementations (cuDNN fusions, Triton kernels); the tactic selector times them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from ..errors import BuildError
from ..ir.ops import OpAttrs

KernelFn = Callable[[OpAttrs, Sequence[torch.Tensor | None]], list[torch.Tensor]]
REFERENCE_TARGET = "cpu"
PORTABLE_IMPL = "torch"


@dataclasses.dataclass(frozen=True)
class KernelEntry:
    kind: str
    target: str
    impl: str
    fn: KernelFn
    supports: Callable[[OpAttrs, Sequence], bool] | None = None  # (op, input specs) -> can this kernel serve it
    # honours op.residual_in_place: writes its output over the residual input (each output element after reading
    # its own residual element), so the memory plan may give both one block
    writes_over_residual: bool = False

    def accepts(self, op: OpAttrs, inputs: Sequence) -> bool:
        return self.supports is None or self.supports(op, inputs)


_KERNELS: dict[tuple[str, str, str], KernelEntry] = {}


def kernel(op_class: type[OpAttrs], target: str = REFERENCE_TARGET, impl: str = PORTABLE_IMPL, supports=None,
           writes_over_residual: bool = False):
    """Register `fn` as implementation `impl` of layer kind `op_class` on `target`."""

    def register(fn: KernelFn) -> KernelFn:
        key = (op_class.KIND, target, impl)
        if key in _KERNELS:
            raise ValueError(f"kernel {key} is registered twice")
        _KERNELS[key] = KernelEntry(op_class.KIND, target, impl, fn, supports, writes_over_residual)
        return fn

    return register


def get_kernel(kind: str, target: str = REFERENCE_TARGET, impl: str = PORTABLE_IMPL) -> KernelFn:
    _load_builtin_kernels(target)
    entry = _KERNELS.get((kind, target, impl))
    if entry is None and impl == PORTABLE_IMPL:
        entry = _KERNELS.get((kind, REFERENCE_TARGET, PORTABLE_IMPL))
    if entry is None:
        known = sorted(k for k, t, _ in _KERNELS if t in (target, REFERENCE_TARGET))
        raise BuildError(f"no {target} kernel {impl!r} for layer kind {kind!r}; kinds with kernels: {known}")
    return entry.fn


def find_kernel(kind: str, target: str, impl: str) -> KernelEntry | None:
    """The registered kernel of (kind, target, impl), None where there is none. As `candidates` offers it, the
    portable torch kernel of the reference target also serves every other target as (kind, target, "torch")."""
    _load_builtin_kernels(target)
    entry = _KERNELS.get((kind, target, impl))
    if entry is None and impl == PORTABLE_IMPL:
        portable = _KERNELS.get((kind, REFERENCE_TARGET, PORTABLE_IMPL))
        entry = None if portable is None else dataclasses.replace(portable, target=target)
    return entry


def writes_over_residual(tactic: str) -> bool:
    """Whether the kernel a tactic id (target.kind.impl) names can write its output over its residual input."""
    target, kind, impl = tactic.split(".", 2)
    _load_builtin_kernels(target)
    entry = _KERNELS.get((kind, target, impl))
    return entry is not None and entry.writes_over_residual


def candidates(kind: str, target: str, op: OpAttrs, inputs: Sequence) -> list[KernelEntry]:
    """Every implementation that can serve this layer on `target`, the portable torch one first."""
    _load_builtin_kernels(target)
    found = [e for (k, t, _), e in _KERNELS.items() if k == kind and t == target and e.accepts(op, inputs)]
    portable = _KERNELS.get((kind, REFERENCE_TARGET, PORTABLE_IMPL))
    if portable is not None and not any(e.impl == PORTABLE_IMPL for e in found):
        found.insert(0, dataclasses.replace(portable, target=target))
    return found


def has_kernel(kind: str, target: str = REFERENCE_TARGET) -> bool:
    _load_builtin_kernels(target)
    return any(k == kind and t in (target, REFERENCE_TARGET) for k, t, _ in _KERNELS)


def _load_builtin_kernels(target: str) -> None:
    from .cpu import load_all  # registers on import

    load_all()
    if target == "cuda":
        from .cuda import load_all as load_cuda

        load_cuda()
