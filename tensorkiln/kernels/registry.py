"""The kernel registry: (layer kind, target) -> implementation, filled by the `kernel` decorator.

A kernel is `fn(op, inputs) -> list of outputs`, where `op` is the layer's attribute dataclass and
`inputs` holds torch tensors (None for an omitted optional input). CPU kernels also serve as the
reference implementation and, run on the meta device, as shape and dtype inference.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import BuildError
from ..ir.ops import OpAttrs

KernelFn = Callable[[OpAttrs, Sequence[torch.Tensor | None]], list[torch.Tensor]]
_KERNELS: dict[tuple[str, str], KernelFn] = {}


def kernel(op_class: type[OpAttrs], target: str = "cpu"):
    """Register `fn` as the `target` implementation of layer kind `op_class`."""

    def register(fn: KernelFn) -> KernelFn:
        key = (op_class.KIND, target)
        if key in _KERNELS:
            raise ValueError(f"kernel for {key} is registered twice")
        _KERNELS[key] = fn
        return fn

    return register


def get_kernel(kind: str, target: str = "cpu") -> KernelFn:
    _load_builtin_kernels()
    try:
        return _KERNELS[(kind, target)]
    except KeyError:
        raise BuildError(f"no {target} kernel for layer kind {kind!r}; "
                         f"kinds with {target} kernels: {sorted(k for k, t in _KERNELS if t == target)}") from None


def has_kernel(kind: str, target: str = "cpu") -> bool:
    _load_builtin_kernels()
    return (kind, target) in _KERNELS


def _load_builtin_kernels() -> None:
    from .cpu import load_all  # registers on import

    load_all()
