"""Requests run inline (Scheduler.submit(inline=True)): on the caller's thread, only where nothing waits or runs, the
model has no dynamic batching and its last execution was short; the lent instance is never used by two threads at
once, and every request still gets exactly one answer."""
from __future__ import annotations

import threading
import time

import numpy as np

from tensorkiln.serve.config import ModelSettings
from tensorkiln.serve.scheduler import INLINE_MAX_COMPUTE_NS, Scheduler
from tensorkiln.serve.stats import ModelStats


class CountingEngine:
    """Stands in for an engine (its own context): y = x + 1, recording the thread of each execution and the most
    executions it ever ran at once; `gate`, when set, holds each execution until it opens."""
    inputs = outputs = ()

    def __init__(self, pause_s: float = 0.0):
        self.pause_s = pause_s
        self.threads: list[str] = []
        self.running = self.most_running = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def create_execution_context(self):
        return self

    def execute(self, feed):
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.threads.append(threading.current_thread().name)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.pause_s)
        with self._lock:
            self.running -= 1
        return {"y": feed["x"] + 1}


def _x(value: float) -> dict:
    return {"x": np.full((1, 2), value, np.float32)}


def _run_once(scheduler) -> None:
    """One request through the queue (an execution timed), and its instance idle again: an answer comes before the
    instance thread counts itself free."""
    scheduler.submit(_x(0), 1).result(10)
    deadline = time.monotonic() + 10
    while scheduler.pending and time.monotonic() < deadline:
        time.sleep(0.001)


def test_an_idle_model_runs_the_request_on_the_callers_thread_once_an_execution_was_timed():
    engine = CountingEngine()
    stats = ModelStats()
    scheduler = Scheduler(ModelSettings("m", instance_count=2), {0: engine}, stats)
    first = scheduler.submit(_x(1), 1, inline=True)  # nothing timed yet (no warm-up of a stand-in): queued
    assert first.result(10)["y"][0, 0] == 2 and engine.threads[-1].startswith("kiln-m-")
    _run_once(scheduler)
    second = scheduler.submit(_x(2), 1, inline=True)
    assert second.done() and second.result()["y"][0, 0] == 3
    assert engine.threads[-1] == threading.current_thread().name
    assert scheduler.submit(_x(3), 1).result(10)["y"][0, 0] == 4  # not asked: queued
    assert engine.threads[-1] != threading.current_thread().name
    assert stats.execution_count == 4
    scheduler.close()


def test_no_inline_run_with_dynamic_batching_a_busy_model_or_a_slow_engine():
    batching = CountingEngine()
    settings = ModelSettings("b", max_batch_size=4, dynamic_batching=True, max_queue_delay_us=1000)
    scheduler = Scheduler(settings, {size: batching for size in range(1, 5)}, ModelStats())
    scheduler.submit(_x(0), 1).result(10)
    assert not scheduler.submit(_x(1), 1, inline=True).done()  # it waits for companions in the queue
    scheduler.close()

    busy = CountingEngine()
    scheduler = Scheduler(ModelSettings("busy"), {0: busy}, ModelStats())
    _run_once(scheduler)
    busy.gate, busy.entered = threading.Event(), threading.Event()
    running = scheduler.submit(_x(1), 1)
    assert busy.entered.wait(10)
    waiting = scheduler.submit(_x(2), 1, inline=True)
    assert not waiting.done()  # queued behind the running request, not run beside it
    busy.gate.set()
    assert running.result(10)["y"][0, 0] == 2 and waiting.result(10)["y"][0, 0] == 3
    scheduler.close()

    slow = CountingEngine(pause_s=2 * INLINE_MAX_COMPUTE_NS / 1e9)
    scheduler = Scheduler(ModelSettings("slow"), {0: slow}, ModelStats())
    _run_once(scheduler)
    queued = scheduler.submit(_x(1), 1, inline=True)
    assert queued.result(10)["y"][0, 0] == 2 and slow.threads[-1] != threading.current_thread().name
    scheduler.close()


def _blocked_inline_run(scheduler, engine) -> tuple[threading.Thread, dict]:
    """A thread `borrower` whose inline request runs on it and waits at the engine's gate."""
    engine.gate, engine.entered = threading.Event(), threading.Event()
    inline: dict = {}
    borrower = threading.Thread(target=lambda: inline.update(future=scheduler.submit(_x(1), 1, inline=True)),
                                name="borrower", daemon=True)
    borrower.start()
    assert engine.entered.wait(10) and engine.threads[-1] == "borrower"
    return borrower, inline


def test_a_lent_instance_is_never_run_by_its_thread_meanwhile():
    engine = CountingEngine()
    scheduler = Scheduler(ModelSettings("m", instance_count=1), {0: engine}, ModelStats())
    _run_once(scheduler)
    borrower, inline = _blocked_inline_run(scheduler, engine)
    queued = scheduler.submit(_x(2), 1)  # from another thread while the only instance is lent
    time.sleep(0.1)
    assert not queued.done()  # its thread holds back
    engine.gate.set()
    borrower.join(10)
    assert inline["future"].result()["y"][0, 0] == 2 and queued.result(10)["y"][0, 0] == 3
    assert engine.most_running == 1 and scheduler.pending == 0
    scheduler.close()


def test_close_waits_for_an_inline_run():
    engine = CountingEngine()
    scheduler = Scheduler(ModelSettings("m", instance_count=2), {0: engine}, ModelStats())
    _run_once(scheduler)
    borrower, inline = _blocked_inline_run(scheduler, engine)
    closer = threading.Thread(target=scheduler.close)
    closer.start()
    time.sleep(0.1)
    assert closer.is_alive()  # the instance threads are gone, the inline run is not
    engine.gate.set()
    borrower.join(10)
    closer.join(10)
    assert not closer.is_alive() and inline["future"].result()["y"][0, 0] == 2 and scheduler.pending == 0
