"""Console output shared by the kiln subcommands: the rich console, number and shape formats, and the
tables more than one subcommand prints."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table

# Width used when stdout is not a terminal (a pipe, a file, a test): wide enough that tables of layer names
# do not wrap, unless COLUMNS says otherwise.
PIPE_WIDTH = 160


def make_console() -> Console:
    """A console on the current sys.stdout. Markup is off: names such as `const[w]` are data, not markup."""
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(markup=False, highlight=False, emoji=False, width=width)


def warn(message: str) -> None:
    """A warning: one line on stderr, which does not change the exit code (`kiln: warning: ...`)."""
    print(f"kiln: warning: {' '.join(message.split())}", file=sys.stderr)


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_shape(shape: Sequence[int], dim_names: Sequence[str | None] = ()) -> str:
    """(batch=1, 3, 224, 224): sizes, with the model's name of each dynamic dimension where it has one."""
    names = list(dim_names) + [None] * (len(shape) - len(dim_names))
    return "(" + ", ".join(f"{name}={size}" if name else str(size) for size, name in zip(shape, names)) + ")"


def format_number(value) -> str:
    """Compact: 6 significant digits for floats, integers and booleans as they are."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def key_value_table(title: str, rows: Iterable[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def io_table(plan, title: str = "inputs and outputs") -> Table:
    """Name, mode, dtype and shape of every engine input and output."""
    table = Table(title=title, title_justify="left")
    for column in ("name", "mode", "dtype", "shape"):
        table.add_column(column)
    for mode, specs in (("input", plan.inputs), ("output", plan.outputs)):
        for spec in specs:
            table.add_row(spec.name, mode, spec.dtype.value, format_shape(spec.shape, spec.dim_names))
    return table


def target_description(plan) -> str:
    """cpu, or cuda with the device name and compute capability the engine was built for."""
    if plan.target != "cuda":
        return plan.target
    return f"cuda ({plan.device_name or 'GPU'}, compute capability {plan.compute_capability or '?'})"
