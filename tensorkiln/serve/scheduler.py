"""The scheduler of one loaded model: a bounded queue, dynamic batching, and instance threads.

Every accepted request gets exactly one answer: `submit` either refuses at once (Unavailable: full queue, model
closing) or returns a Future that an instance thread completes with outputs or with an error. A client that goes
away cancels its Future: a cancelled request still queued is dropped unrun (counted in stats.cancelled); one
already running cannot be cancelled and is answered into the void. Closing drains: the
requests already queued are run before the threads stop, so an unload or a SIGTERM answers them all.

Engines are built for fixed shapes (dynamic shapes are issue 20), so a batched model holds one engine per batch
size in `engines` (1, max_batch_size and the preferred sizes): a batch of n rows runs on the smallest engine of at
least n rows, its tail padded with zeros and the padding's outputs dropped.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time
from typing import Mapping

import numpy as np

from .errors import InvalidRequest, Unavailable
from .stats import ModelStats


@dataclasses.dataclass
class Request:
    inputs: dict[str, np.ndarray]
    rows: int  # the batch dimension's size (1 for a model without batching)
    future: concurrent.futures.Future
    enqueued_ns: int


class Scheduler:
    def __init__(self, settings, engines: Mapping[int, object], stats: ModelStats):
        self.settings = settings
        self.engines = dict(sorted(engines.items()))  # batch size -> Engine (key 0: a model without batching)
        self.stats = stats
        self._queue: collections.deque[Request] = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self._busy = 0  # requests taken off the queue and not yet answered
        self._threads = [threading.Thread(target=self._serve, args=(index,), daemon=True,
                                          name=f"kiln-{settings.name}-{index}")
                         for index in range(settings.instance_count)]
        for thread in self._threads:
            thread.start()

    # ---- the door ------------------------------------------------------------------------------
    def submit(self, inputs: dict[str, np.ndarray], rows: int) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._ready:
            if self._closing:
                self.stats.record_rejection()
                raise Unavailable(f"model {self.settings.name!r} is being unloaded; retry after it is loaded again")
            if len(self._queue) >= self.settings.max_queue_size:
                self.stats.record_rejection()
                raise Unavailable(f"model {self.settings.name!r}: the queue is full "
                                  f"({self.settings.max_queue_size} requests); retry after "
                                  f"{Unavailable.retry_after_s} s or raise max_queue_size")
            self._queue.append(Request(inputs, rows, future, time.perf_counter_ns()))
            self._ready.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, answer the queued ones, then stop the instance threads."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def pending(self) -> int:
        with self._ready:
            return len(self._queue) + self._busy

    # ---- instance threads ----------------------------------------------------------------------
    def _serve(self, index: int) -> None:
        contexts = {size: engine.create_execution_context() for size, engine in self.engines.items()}
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch, contexts)
            finally:
                with self._ready:
                    self._busy -= len(batch)

    def _next_batch(self) -> list[Request] | None:
        settings = self.settings
        with self._ready:
            while True:
                while not self._queue:
                    if self._closing:
                        return None
                    self._ready.wait()
                first = self._queue.popleft()
                if self._claim(first):
                    break
            batch = [first]
            rows = first.rows
            if settings.dynamic_batching:
                target = max(settings.preferred_batch_sizes, default=settings.max_batch_size)
                deadline = batch[0].enqueued_ns + settings.max_queue_delay_us * 1000
                while rows < target:
                    if self._queue:
                        if rows + self._queue[0].rows > settings.max_batch_size:
                            break
                        request = self._queue.popleft()
                        if self._claim(request):
                            batch.append(request)
                            rows += request.rows
                        continue
                    left_s = (deadline - time.perf_counter_ns()) / 1e9
                    if left_s <= 0 or self._closing:
                        break
                    self._ready.wait(left_s)
            self._busy += len(batch)
            return batch

    def _claim(self, request: Request) -> bool:
        """Mark `request` running (from now on its client cannot cancel it); False: it was cancelled, drop it."""
        if request.future.set_running_or_notify_cancel():
            return True
        self.stats.record_cancelled()
        return False

    def _run(self, batch: list[Request], contexts: dict) -> None:
        started = time.perf_counter_ns()
        rows = sum(request.rows for request in batch)
        try:
            size = self._engine_size(rows)
            feed = _stack([request.inputs for request in batch], rows, size)
            outputs = contexts[size].execute(feed)
        except Exception as error:  # an engine failure answers every request of the batch, and the thread lives on
            now = time.perf_counter_ns()
            self.stats.record_failure(now - started, len(batch))
            for request in batch:
                _answer(request.future, error=error)
            return
        finished = time.perf_counter_ns()
        self.stats.record_batch(rows, [started - r.enqueued_ns for r in batch], finished - started,
                                [finished - r.enqueued_ns for r in batch])
        if size == 0:
            _answer(batch[0].future, outputs)
            return
        start = 0
        for request in batch:  # views into the batch's outputs: no copy
            _answer(request.future, {name: value[start:start + request.rows] for name, value in outputs.items()})
            start += request.rows

    def _engine_size(self, rows: int) -> int:
        if 0 in self.engines:
            return 0
        for size in self.engines:
            if size >= rows:
                return size
        raise InvalidRequest(f"model {self.settings.name!r}: a batch of {rows} exceeds max_batch_size "
                             f"{self.settings.max_batch_size}")


def _answer(future: concurrent.futures.Future, result=None, error: BaseException | None = None) -> None:
    """Complete `future`, unless its client went away (a cancelled future) while it waited."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def _stack(feeds: list[dict[str, np.ndarray]], rows: int, size: int) -> dict[str, np.ndarray]:
    """The batch's inputs as one array per name, padded with zeros to the engine's `size` rows (one copy)."""
    if size == 0 or (len(feeds) == 1 and rows == size):
        return feeds[0]
    stacked = {}
    for name, first in feeds[0].items():
        out = np.zeros((size, *first.shape[1:]), dtype=first.dtype)
        np.concatenate([feed[name] for feed in feeds], axis=0, out=out[:rows])
        stacked[name] = out
    return stacked
