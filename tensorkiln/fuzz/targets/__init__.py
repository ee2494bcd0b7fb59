"""Fuzz targets: what a case is made from (`mutate`) and how it runs (`run`), one module per target, registered
by the `fuzz_target` decorator. `mutate` runs in the parent (or the test), `run` in the worker (or the test)."""
from __future__ import annotations

import dataclasses
import importlib
import time
from pathlib import Path
from typing import Callable

from ..case import OK, Case, Outcome, outcome_of_exception
from ..choices import Choices
from ..execution import CaseRun
from ..seeds import SeedBundle

Mutate = Callable[[Choices, SeedBundle], Case]
Run = Callable[[Case, CaseRun], None]


@dataclasses.dataclass(frozen=True)
class FuzzTarget:
    name: str
    mutate: Mutate
    run: Run
    description: str


_TARGETS: dict[str, FuzzTarget] = {}
# modules that register targets, imported on first lookup; the campaign order of `--target all`
_TARGET_MODULES = ("engine", "onnx_models", "caffe", "inputs", "selftest")
CAMPAIGN_TARGETS = ("engine", "onnx", "caffe", "inputs")  # what `--target all` runs (selftest tests the harness)


def fuzz_target(name: str, description: str, mutate: Mutate) -> Callable[[Run], Run]:
    """Register `run` (the decorated function) and `mutate` as target `name`."""

    def register(run: Run) -> Run:
        if name in _TARGETS:
            raise ValueError(f"fuzz target {name!r} is registered twice")
        _TARGETS[name] = FuzzTarget(name, mutate, run, description)
        return run

    return register


def get_target(name: str) -> FuzzTarget:
    _load_targets()
    if name not in _TARGETS:
        raise KeyError(f"no fuzz target {name!r}; the targets are {sorted(_TARGETS)}")
    return _TARGETS[name]


def target_names() -> list[str]:
    _load_targets()
    return sorted(_TARGETS)


def _load_targets() -> None:
    for module in _TARGET_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def run_case(case: Case, scratch: Path) -> Outcome:
    """Run one case here, in this process, and classify how it ended (a crash or a hang ends the process or
    never returns: only the runner's worker processes can report those)."""
    target = get_target(case.target)
    run = CaseRun(scratch)
    start = time.perf_counter()
    try:
        target.run(case, run)
        outcome = Outcome(OK)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - SystemExit from library code is a finding too
        outcome = outcome_of_exception(error)
    return dataclasses.replace(outcome, seconds=round(time.perf_counter() - start, 4), stage=run.stage)
