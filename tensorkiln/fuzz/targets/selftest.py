"""A target that checks the harness itself: each case asks the worker to do one thing the runner must classify
(succeed, raise a TensorkilnError, raise another exception, run out of memory, die of a signal, hang). The tests
and `python -m tensorkiln.fuzz --target selftest` use it to show that crashes and hangs are caught and saved."""
from __future__ import annotations

import os
import signal
import time

from ..case import Case
from ..choices import Choices
from ..execution import CaseRun
from ..seeds import SeedBundle
from . import fuzz_target

BEHAVIOURS = ("ok", "clean", "traceback", "memory", "crash", "abort", "hang")


def selftest_case(behaviour: str) -> Case:
    return Case("selftest", (behaviour.encode(),), {"mutations": [behaviour]})


def mutate_selftest(choices: Choices, bundle: SeedBundle) -> Case:
    return selftest_case(choices.choice(BEHAVIOURS))


@fuzz_target("selftest", "checks the harness: ok, clean, traceback, memory, crash, abort and hang cases",
             mutate_selftest)
def run_selftest_case(case: Case, run: CaseRun) -> None:
    from ...errors import InputError

    behaviour = case.parts[0].decode()
    run.stage = behaviour
    if behaviour == "clean":
        raise InputError("a clean error, as the library raises it")
    if behaviour == "traceback":
        raise ZeroDivisionError("a traceback the harness must report")
    if behaviour == "memory":  # past the worker's address-space limit: MemoryError, not the machine swapping
        bytearray(1 << 45)
    if behaviour == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if behaviour == "abort":
        os.abort()
    if behaviour == "hang":
        time.sleep(3600)
