"""The registry of IR layer kinds: `op` registers a frozen attribute dataclass under a stable name (`KIND`)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar


OP_KINDS: dict[str, type["OpAttrs"]] = {}


def op(kind: str):
    """Register a frozen attribute dataclass as the IR layer kind `kind`."""

    def register(cls):
        if kind in OP_KINDS:
            raise ValueError(f"layer kind {kind!r} is registered twice")
        cls = dataclasses.dataclass(frozen=True)(cls)
        cls.KIND = kind
        OP_KINDS[kind] = cls
        return cls

    return register


class OpAttrs:
    KIND: ClassVar[str]


Ints = tuple[int, ...]


def attrs_of(kind: str) -> type[OpAttrs]:
    return OP_KINDS[kind]
