"""Layer attributes to and from plain JSON values (used by the engine file; never pickle)."""
from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from .ops import OP_KINDS, OpAttrs


def op_to_json(op: OpAttrs) -> dict[str, Any]:
    attrs = {f.name: _encode(getattr(op, f.name)) for f in dataclasses.fields(op)}
    return {"kind": op.KIND, "attrs": attrs}


def op_from_json(data: dict[str, Any]) -> OpAttrs:
    kind = data["kind"]
    if kind not in OP_KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    cls = OP_KINDS[kind]
    hints = _hints(cls)
    values = {name: _decode(hints[name], value) for name, value in data["attrs"].items()}
    return cls(**values)


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _encode(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(hint, value):
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        return _decode(options[0], value)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_decode(item, v) for v in value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is float:
        return float(value)
    return value
