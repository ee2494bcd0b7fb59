"""Registry of TFLite operator converters, keyed by builtin operator name ("CONV_2D"), filled by `converter`.

A converter is `fn(ctx, op) -> list of output tensors` (one per operator output). It reads inputs and options
through the TFLiteContext and adds layers through `ctx.network` (the NetworkDefinition API). Tensors keep
TFLite's own layout (NHWC); converters of layout-bound ops (convolution, pooling) transpose at their edges.
"""
from __future__ import annotations

from typing import Callable

_CONVERTERS: dict[str, Callable] = {}


def converter(*op_names: str):
    def register(fn):
        for op_name in op_names:
            if op_name in _CONVERTERS:
                raise ValueError(f"TFLite converter for {op_name!r} is registered twice")
            _CONVERTERS[op_name] = fn
        return fn

    return register


def find_converter(op_name: str) -> Callable | None:
    _load_builtin()
    return _CONVERTERS.get(op_name)


def supported_ops() -> list[str]:
    """The TFLite builtin operators tensorkiln converts, sorted by name."""
    _load_builtin()
    return sorted(_CONVERTERS)


def _load_builtin() -> None:
    from . import ops  # noqa: F401  (registers every converter family)
