"""Progress bars (rich) for the slow parts of a build: tactic timing and INT8 calibration.

A bar is drawn on stderr when stderr is a terminal, and never otherwise, so that logs, pipes and CI output stay
free of control sequences; rich is imported only when a bar is drawn. A caller may pass its own rich Console (a
test draws into a buffer with Console(force_terminal=True, file=...)).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _no_progress(steps: int = 1) -> None:
    pass


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True,
                 console=None) -> Iterator[Callable[[int], None]]:
    """A context whose value advances the bar by `steps` (default 1). Without `console`, the bar goes to stderr where
    it is a terminal; `enabled` False (nothing to show) draws nothing either way. The bar is removed when done."""
    if not enabled or (console is None and not stderr_is_terminal()):
        yield _no_progress
        return
    from rich.console import Console
    from rich.progress import Progress

    # stderr was found to be a terminal above: say so to rich, which would check sys.stderr again at every write
    with Progress(console=console or Console(stderr=True, force_terminal=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda steps=1: bar.advance(task, steps)
