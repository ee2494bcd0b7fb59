"""Registry of ONNX node converters, keyed by (domain, op type), filled by the `converter` decorator.

A converter is `fn(ctx, node) -> list of output tensors` (one per node output; None for an omitted
optional output). It reads attributes and inputs through the ConversionContext and adds layers through
`ctx.network` (the NetworkDefinition API).
"""
from __future__ import annotations

from typing import Callable

import onnx

DEFAULT_DOMAIN = ""
MIN_OPSET, MAX_OPSET = 7, onnx.defs.onnx_opset_version()

_CONVERTERS: dict[tuple[str, str], Callable] = {}


def converter(*op_types: str, domain: str = DEFAULT_DOMAIN):
    def register(fn):
        for op_type in op_types:
            key = (domain, op_type)
            if key in _CONVERTERS:
                raise ValueError(f"ONNX converter for {op_type!r} (domain {domain!r}) is registered twice")
            _CONVERTERS[key] = fn
        return fn

    return register


def find_converter(domain: str, op_type: str) -> Callable | None:
    _load_builtin()
    return _CONVERTERS.get(("" if domain == "ai.onnx" else domain, op_type))


def supported_ops(domain: str = DEFAULT_DOMAIN) -> list[str]:
    _load_builtin()
    return sorted(op for d, op in _CONVERTERS if d == domain)


def _load_builtin() -> None:
    from . import ops  # noqa: F401  (registers every converter family)
