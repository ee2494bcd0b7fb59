"""Structural mutations of a JSON document (an engine plan): values swapped for hostile ones, lists and objects
edited, names exchanged for other names of the same document, and nesting past the parser's recursion limit.

A mutation edits the document in place and returns a one-line description of what it did (kept in the case's
info, so a finding says how its plan differs from the seed's).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from .choices import Choices

Path = tuple  # keys and indexes from the root to a node
JSON = Any

# Nesting deeper than this is written into the text after json.dumps (whose own recursion would fail first)
_DEEP = 200
_NEST_MARK = "tkfuzz-nest:"  # a string no plan holds


def node_paths(root: JSON, prefix: Path = ()) -> list[Path]:
    """Every node under root (root included), depth first."""
    found = [prefix]
    if isinstance(root, dict):
        for key, value in root.items():
            found.extend(node_paths(value, (*prefix, key)))
    elif isinstance(root, list):
        for index, value in enumerate(root):
            found.extend(node_paths(value, (*prefix, index)))
    return found


def get_at(root: JSON, path: Path) -> JSON:
    for key in path:
        root = root[key]
    return root


def set_at(root: JSON, path: Path, value: JSON) -> JSON:
    """The document with the node at `path` replaced (a new root where `path` is empty)."""
    if not path:
        return value
    get_at(root, path[:-1])[path[-1]] = value
    return root


def strings_of(root: JSON) -> list[str]:
    """Every string value and key of the document: names a mutation can swap for one another."""
    found: set[str] = set()
    for path in node_paths(root):
        value = get_at(root, path)
        if isinstance(value, str):
            found.add(value)
        if path and isinstance(path[-1], str):
            found.add(path[-1])
    return sorted(found)


def hostile_value(choices: Choices, pool: list[str]) -> JSON:
    """A value of any JSON type that well-formed code does not expect where it lands."""
    kind = choices.choice(("int", "int", "float", "bool", "none", "str", "list", "dict", "nested"))
    if kind == "int":
        return choices.interesting_int()
    if kind == "float":
        return choices.interesting_float()
    if kind == "bool":
        return choices.boolean()
    if kind == "none":
        return None
    if kind == "str":
        return choices.text(pool)
    if kind == "list":
        return [choices.interesting_int() for _ in range(choices.integer(0, 5))]
    if kind == "dict":
        return {choices.text(pool): choices.interesting_int()}
    return [[[choices.interesting_int()]]]


class JsonMutator:
    """Mutations of one document. `pool` holds names (of this document and of the vocabulary) to swap in."""

    def __init__(self, choices: Choices, pool: list[str]):
        self.choices, self.pool = choices, pool
        self.mutations: dict[str, tuple[int, Callable[[JSON, Path], tuple[JSON, str]]]] = {
            "replace": (6, self.replace), "number": (6, self.number), "string": (5, self.string),
            "list": (5, self.list_edit), "dict": (4, self.dict_edit), "transplant": (2, self.transplant),
            "nest": (1, self.nest),
        }

    def mutate(self, root: JSON, paths: list[Path]) -> tuple[JSON, str]:
        """Apply one mutation to one of `paths`; returns the (maybe new) root and a description."""
        name = self.choices.weighted([(weight, name) for name, (weight, _) in self.mutations.items()])
        path = self.choices.choice(paths)
        return self.mutations[name][1](root, path)

    # ---- the mutations ---------------------------------------------------------------------------------------
    def replace(self, root: JSON, path: Path) -> tuple[JSON, str]:
        value = hostile_value(self.choices, self.pool)
        return set_at(root, path, value), f"{_show(path)} = {_short(value)}"

    def number(self, root: JSON, path: Path) -> tuple[JSON, str]:
        old = get_at(root, path)
        if isinstance(old, bool) or not isinstance(old, (int, float)):
            return self.replace(root, path)
        if isinstance(old, float) and self.choices.boolean():
            new: JSON = self.choices.interesting_float()
        else:
            new = self.choices.interesting_int(near=old)
        return set_at(root, path, new), f"{_show(path)}: {_short(old)} -> {_short(new)}"

    def string(self, root: JSON, path: Path) -> tuple[JSON, str]:
        old = get_at(root, path)
        if not isinstance(old, str):
            return self.replace(root, path)
        new = self.choices.text(self.pool)
        if self.choices.integer(0, 3) == 0:  # an edit of the string itself: a suffix, a cut, a doubled part
            new = self.choices.choice((old + new, old[:self.choices.integer(0, len(old))], old + old, old.upper()))
        return set_at(root, path, new), f"{_show(path)}: {_short(old)} -> {_short(new)}"

    def list_edit(self, root: JSON, path: Path) -> tuple[JSON, str]:
        target = get_at(root, path)
        if not isinstance(target, list):
            return self.dict_edit(root, path) if isinstance(target, dict) else self.replace(root, path)
        edit = self.choices.choice(("drop", "duplicate", "swap", "reverse", "clear", "append", "insert"))
        if target and edit in ("drop", "duplicate", "swap"):
            i, j = self.choices.integer(0, len(target) - 1), self.choices.integer(0, len(target) - 1)
            if edit == "drop":
                del target[i]
            elif edit == "duplicate":
                target.insert(j, json.loads(json.dumps(target[i])))
            else:
                target[i], target[j] = target[j], target[i]
            return root, f"{_show(path)}: {edit} [{i}] ({j})"
        if edit == "reverse":
            target.reverse()
        elif edit == "clear":
            target.clear()
        else:
            position = self.choices.integer(0, len(target)) if edit == "insert" else len(target)
            target.insert(position, hostile_value(self.choices, self.pool))
        return root, f"{_show(path)}: {edit}"

    def dict_edit(self, root: JSON, path: Path) -> tuple[JSON, str]:
        target = get_at(root, path)
        if not isinstance(target, dict):
            return self.list_edit(root, path) if isinstance(target, list) else self.replace(root, path)
        keys = list(target)
        edit = self.choices.choice(("drop", "add", "rename", "copy"))
        if not keys or edit == "add":
            key = self.choices.text(self.pool)
            target[key] = hostile_value(self.choices, self.pool)
            return root, f"{_show(path)}: add {key!r}"
        key = self.choices.choice(keys)
        if edit == "drop":
            del target[key]
        elif edit == "rename":
            target[self.choices.text(self.pool)] = target.pop(key)
        else:  # another key's value: a right type in the wrong place
            target[key] = json.loads(json.dumps(target[self.choices.choice(keys)]))
        return root, f"{_show(path)}: {edit} {key!r}"

    def transplant(self, root: JSON, path: Path) -> tuple[JSON, str]:
        """Another node of the document copied over this one."""
        source = self.choices.choice(node_paths(root))
        copy = json.loads(json.dumps(get_at(root, source)))
        return set_at(root, path, copy), f"{_show(path)} = copy of {_show(source)}"

    def nest(self, root: JSON, path: Path) -> tuple[JSON, str]:
        depth = self.choices.choice((1, 2, 10, 1000, 100_000))
        value = get_at(root, path)
        if depth >= _DEEP:  # written as text by dumps(), so json.dumps does not overflow first
            return set_at(root, path, f"{_NEST_MARK}{depth}"), f"{_show(path)}: nested {depth} deep"
        for _ in range(depth):
            value = [value]
        return set_at(root, path, value), f"{_show(path)}: nested {depth} deep"


def dumps(root: JSON) -> str:
    """The document as compact JSON, NaN and Infinity included, with the deep nests of `nest` spelled out."""
    text = json.dumps(root, separators=(",", ":"))
    mark = f'"{_NEST_MARK}'
    while mark in text:
        start = text.index(mark)
        end = text.index('"', start + 1)
        depth = int(text[start + len(mark):end])
        text = text[:start] + "[" * depth + "0" + "]" * depth + text[end + 1:]
    return text


def _show(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "<root>"


def _short(value: JSON) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
