"""The names a model gives its values and layers, checked as the engine file will check them.

Names travel into the engine file (tensor names, step names, the layers a step was fused from), whose reader
refuses a name that is empty, too long, or holds a control character (a name with a newline could forge a line of
output). The importers refuse such a name up front, naming where it is, instead of building an engine that its own
loader rejects.
"""
from __future__ import annotations

from ..plan.schema import MAX_NAME_LENGTH, _CONTROL


def name_problem(name: str, allow_empty: bool = False) -> str | None:
    """Why `name` cannot be a tensor or layer name (one phrase), or None."""
    if not name:
        return None if allow_empty else "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    if _CONTROL.search(name):
        return "holds a control character (a newline, a tab, ...)"
    return None
