"""Plugin parameters to and from canonical JSON, and from loose values (ONNX attributes, user dicts).

Parameters are data: a frozen dataclass of int, float, bool, str, enums and tuples (nested dataclasses
allowed), or a dict of JSON values. The JSON is canonical (sorted keys, no spaces), so two layers with
equal parameters serialize to equal strings.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from typing import Any, Mapping


def params_to_json(params: Any) -> str:
    return json.dumps(_encode(params), sort_keys=True, separators=(",", ":"))


def params_from_json(params_cls: type | None, text: str) -> Any:
    return make_params(params_cls, json.loads(text))


def make_params(params_cls: type | None, values: Any) -> Any:
    """Parameters of a plugin from a Params instance, a mapping of loose values, or None (the defaults)."""
    if params_cls is None:
        mapping = dict(values or {})
        try:
            return json.loads(json.dumps(_encode(mapping), sort_keys=True))
        except (TypeError, ValueError) as error:
            raise ValueError(f"plugin parameters must be JSON values (numbers, strings, lists, dicts): {error}"
                             ) from None
    if isinstance(values, params_cls):
        return values
    return _make_dataclass(params_cls, dict(values or {}), "parameters")


def _make_dataclass(cls: type, values: Mapping[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where} {unknown}; {cls.__qualname__} has {sorted(fields)}")
    hints = _hints(cls)
    coerced = {name: _coerce(hints[name], value, f"{where} {name!r}") for name, value in values.items()}
    missing = [name for name, f in fields.items() if name not in coerced
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing {where} {missing} of {cls.__qualname__}")
    return cls(**coerced)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """`value` as the type `hint` names; ValueError naming the parameter where it cannot be."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        return _coerce(options[0], value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            value = [value]  # a single value where a list is expected (ONNX ints vs int)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if isinstance(hint, type):
        return _coerce_scalar(hint, value, where)
    return value


def _coerce_scalar(hint: type, value: Any, where: str) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy scalars and 0-d arrays
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _make_dataclass(hint, dict(value), where)
    if issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        for member in hint:
            if value in (member.value, member.name):
                return member
        raise ValueError(f"{where} is {value!r}; expected one of {[m.name for m in hint]}")
    if hint is bool:
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
    elif hint is int:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ValueError(f"{where} is {value!r}, which is not a {hint.__name__}")


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy arrays and scalars (ONNX tensor attributes)
        return _encode(value.tolist())
    if isinstance(value, bytes):
        return value.decode()
    return value
