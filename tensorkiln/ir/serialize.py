"""Layer attributes to and from plain JSON values (used by the engine file; never pickle).

Reading is strict, because an engine file is hostile input: every attribute is checked against the type hint of
its dataclass field (ints that are not bools, floats, bools, strings, enum values, tuples and optionals of those),
unknown attributes are refused, and missing ones must have a default. A problem raises AttributeFormatError naming
the attribute; nothing else escapes.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from .ops import OP_KINDS, OpAttrs


class AttributeFormatError(ValueError):
    """A layer's attributes in JSON do not match the layer kind's attribute dataclass."""


def op_to_json(op: OpAttrs) -> dict[str, Any]:
    attrs = {f.name: _encode(getattr(op, f.name)) for f in dataclasses.fields(op)}
    return {"kind": op.KIND, "attrs": attrs}


def op_from_json(data: Any) -> OpAttrs:
    """The attribute dataclass of `{"kind": ..., "attrs": {...}}`; AttributeFormatError where it does not fit."""
    if not isinstance(data, dict) or set(data) != {"kind", "attrs"}:
        raise AttributeFormatError(f"op must be an object with the keys 'kind' and 'attrs', not {_shape_of(data)}")
    kind, attrs = data["kind"], data["attrs"]
    if not isinstance(kind, str) or kind not in OP_KINDS:
        raise AttributeFormatError(f"unknown layer kind {_shape_of(kind)}")
    if not isinstance(attrs, dict):
        raise AttributeFormatError(f"attrs of a {kind} layer must be an object, not {_shape_of(attrs)}")
    cls = OP_KINDS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(attrs) - set(fields))
    if unknown:
        raise AttributeFormatError(f"a {kind} layer has no attributes {unknown}; its attributes are {sorted(fields)}")
    missing = sorted(name for name, f in fields.items() if name not in attrs and _required(f))
    if missing:
        raise AttributeFormatError(f"a {kind} layer needs the attributes {missing}")
    hints = _hints(cls)
    return cls(**{name: _decode(hints[name], value, name) for name, value in attrs.items()})


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _encode(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _shape_of(value) -> str:
    """A short description of a JSON value for messages (never the whole value: it may be huge)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _decode(hint, value, where: str):
    """`value` as the type `hint` names; AttributeFormatError naming `where` when it is not one."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        return _decode(options[0], value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise AttributeFormatError(f"attribute {where!r} must be a list, not {_shape_of(value)}")
        item = typing.get_args(hint)[0]
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        for member in hint:
            if isinstance(value, str) and member.value == value:
                return member
        choices = ", ".join(repr(m.value) for m in hint)
        raise AttributeFormatError(f"attribute {where!r} is {_shape_of(value)}, not one of {choices}")
    if hint is bool:
        if not isinstance(value, bool):
            raise AttributeFormatError(f"attribute {where!r} must be true or false, not {_shape_of(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise AttributeFormatError(f"attribute {where!r} must be an integer, not {_shape_of(value)}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise AttributeFormatError(f"attribute {where!r} must be a number, not {_shape_of(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise AttributeFormatError(f"attribute {where!r} is too large a number") from None
    if hint is str:
        if not isinstance(value, str):
            raise AttributeFormatError(f"attribute {where!r} must be a string, not {_shape_of(value)}")
        return value
    raise AttributeFormatError(f"attribute {where!r} has the type {hint!r}, which the engine reader cannot decode")
