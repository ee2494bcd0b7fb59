"""The scheduler of one loaded model: a bounded queue, dynamic batching, and instance threads.

Every accepted request gets exactly one answer: `submit` either refuses at once (Unavailable: full queue, model
closing) or returns a Future that an instance thread completes with outputs or with an error. A client that goes
away cancels its Future: a cancelled request still queued is dropped unrun (counted in stats.cancelled); one
already running cannot be cancelled and is answered into the void. Closing drains: the
requests already queued are run before the threads stop, so an unload or a SIGTERM answers them all.

`engines` maps each batch size the model runs to its engine (engines.py): one engine with an optimization profile
for every size, or one fixed-shape engine per size; a batch of n rows runs at the smallest size of at least n, its
tail padded with zeros and the padding's outputs dropped. Requests whose non-batch dims differ (an engine whose
profile varies them) are never batched together.

Model instances (instance_group count): each is a thread with its own execution contexts, so instances run at the
same time (the engines release the GIL in their kernels); on a GPU each thread also has its own CUDA stream, made
current for everything it runs. Before the model is ready every instance runs each batch size once on zeros, so
that specializations and CUDA graph captures happen at load, not on a request's time; on a GPU these warm-ups run
one instance at a time, while no GPU batch runs (GPU_WORK).

Run inline: a front end may ask `submit` to run the request at once on the calling thread (the event loop's)
where nothing waits or runs and the model has no dynamic batching, so there is no batch to gather: an idle
instance is lent to the caller, its own thread holding back meanwhile. That saves the two thread hops of the
queued path (the instance thread's wake-up, the loop's wake-up by the answer: ~0.2 ms of a 0.5 ms overhead at
concurrency 1 on a CPU), at the price of the loop doing nothing else while the engine runs, which is why it is only
done for models whose last execution took at most INLINE_MAX_COMPUTE_NS (measured at warm-up first).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
import time
from typing import Mapping

import numpy as np

from .errors import InvalidRequest, ServeError, Unavailable
from .stats import ModelStats
from .waiters import wake_waiters

log = logging.getLogger("tensorkiln.serve")

# The longest execution a request may run inline for: the event loop answers no one else meanwhile, and a thread hop
# costs ~0.1 ms, so only engines of about that time gain and none can hold the loop for long.
INLINE_MAX_COMPUTE_NS = 1_000_000
UNMEASURED = 1 << 62  # no execution timed yet (a stand-in engine without warm-up): nothing runs inline


@dataclasses.dataclass
class Request:
    inputs: dict[str, np.ndarray]
    rows: int  # the batch dimension's size (1 for a model without batching)
    future: concurrent.futures.Future
    enqueued_ns: int
    signature: tuple = ()  # (name, non-batch dims) of each input: only requests of one signature batch together
    waiter: object = None  # an asyncio.Future its caller awaits instead of `future` (waiters.py)


@dataclasses.dataclass
class Instance:
    """One model instance's execution state, used by one thread at a time: its own thread, or a caller it is lent to
    (`lent`) for one request run inline."""
    contexts: dict
    staging: "PinnedStaging | None"  # pinned host buffers where the engines run on a GPU
    stream: object = None  # its CUDA stream on a GPU
    lent: bool = False


class Scheduler:
    def __init__(self, settings, engines: Mapping[int, object], stats: ModelStats):
        self.settings = settings
        self.engines = dict(sorted(engines.items()))  # batch size -> Engine (key 0: a model without batching)
        self.stats = stats
        self._queue: collections.deque[Request] = collections.deque()
        lock = threading.RLock()
        self._ready = threading.Condition(lock)  # idle instances wait on it for requests
        # One instance at a time gathers a dynamic batch (as Triton's batcher forms one batch, then hands it over):
        # the others wait for the next one. The gatherer waits on `_more`, woken only when enough rows are queued to
        # fill its batch (else it takes what came at its deadline): no wake-up of a thread per request.
        self._more = threading.Condition(lock)
        self._gathering = False
        self._wanted_rows = 0  # rows the waiting gatherer still wants
        self._queued_rows = 0
        self._closing = False
        self._busy = 0  # requests taken off the queue (or run inline) and not yet answered
        self._instances: list[Instance] = []  # those that warmed up
        self._lent = 0  # instances lent to a caller for an inline run
        self._last_compute_ns = UNMEASURED  # the latest execution's time, any instance
        self._warmed = threading.Barrier(settings.instance_count + 1)
        self._start_errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._serve, args=(index,), daemon=True,
                                          name=f"kiln-{settings.name}-{index}")
                         for index in range(settings.instance_count)]
        for thread in self._threads:
            thread.start()
        self._warmed.wait()  # every instance has made its contexts and run each batch size once
        if self._start_errors:
            self.close()
            error = self._start_errors[0]
            raise ServeError(f"model {settings.name!r}: an instance could not start: {error}") from error

    # ---- the door ------------------------------------------------------------------------------
    def submit(self, inputs: dict[str, np.ndarray], rows: int, inline: bool = False,
               waiter=None) -> concurrent.futures.Future:
        """A Future of the request's outputs. `inline`: the caller may run it at once (see the module's docstring);
        the Future is then done when this returns. `waiter`: an asyncio.Future of the caller's event loop, given the
        outputs (or the error) when the request is answered, with one wake-up of that loop per batch
        (waiters.py); the Future is still completed too."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        request = Request(inputs, rows, future, time.perf_counter_ns(), _signature(inputs), waiter)
        with self._ready:
            if self._closing:
                self.stats.record_rejection()
                raise Unavailable(f"model {self.settings.name!r} is being unloaded; retry after it is loaded again")
            if len(self._queue) >= self.settings.max_queue_size:
                self.stats.record_rejection()
                raise Unavailable(f"model {self.settings.name!r}: the queue is full "
                                  f"({self.settings.max_queue_size} requests); retry after "
                                  f"{Unavailable.retry_after_s} s or raise max_queue_size")
            instance = self._lend_idle_instance() if inline else None
            if instance is None:
                self._queue.append(request)
                self._queued_rows += rows
                if self._gathering:  # it takes this request, or the next gatherer does
                    if self._queued_rows >= self._wanted_rows:
                        self._more.notify()
                elif self._lent:
                    self._ready.notify_all()  # a lent instance's thread may be the one woken, and hold back
                else:
                    self._ready.notify()
                return future
        try:
            future.set_running_or_notify_cancel()
            request.waiter = None  # answered on the caller's thread: it reads `future`
            with _current_stream(instance.stream):
                self._run([request], instance.contexts, instance.staging)
        finally:
            if instance.staging is not None:
                GPU_WORK.release_shared()
            with self._ready:
                instance.lent = False
                self._lent -= 1
                self._busy -= 1
                if self._queue or self._closing:  # else no thread has a reason to wake (each wake-up costs ~0.1 ms)
                    self._ready.notify_all()
        return future

    def _lend_idle_instance(self) -> Instance | None:
        """Under `_ready`: an instance for an inline run, or None where the request must queue."""
        if (self.settings.dynamic_batching or self._queue or self._busy or not self._instances
                or self._last_compute_ns > INLINE_MAX_COMPUTE_NS):
            return None
        instance = self._instances[0]  # nothing runs: every instance is idle
        if instance.staging is not None and not GPU_WORK.try_shared():
            return None  # a warm-up holds the GPU: waiting for it here would stall the event loop
        instance.lent = True
        self._lent += 1
        self._busy += 1
        return instance

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, answer the queued ones (and the inline runs), then stop the instance threads."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
            self._more.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        with self._ready:
            self._ready.wait_for(lambda: not self._lent, timeout)

    @property
    def pending(self) -> int:
        with self._ready:
            return len(self._queue) + self._busy

    # ---- instance threads ----------------------------------------------------------------------
    def _serve(self, index: int) -> None:
        try:
            stream = _instance_stream(self.engines)
        except Exception as error:  # no CUDA stream to be had: the load fails with it
            self._start_errors.append(error)
            self._warmed.wait()
            return
        with _current_stream(stream):
            try:
                staging = PinnedStaging() if _device_type(self.engines) == "cuda" else None
                instance = Instance(_contexts(self.engines), staging, stream)
                with (GPU_WORK.exclusive() if staging is not None else contextlib.nullcontext()):
                    self._warm_up(instance.contexts, staging)
                with self._ready:
                    self._instances.append(instance)
            except Exception as error:  # the load fails with it, rather than a model nobody answers for
                self._start_errors.append(error)
                return
            finally:
                self._warmed.wait()
            while True:
                batch = self._next_batch(instance)
                if batch is None:
                    return
                try:
                    if staging is None:
                        self._run(batch, instance.contexts, staging)
                    else:
                        with GPU_WORK.shared():
                            self._run(batch, instance.contexts, staging)
                finally:
                    with self._ready:
                        self._busy -= len(batch)

    def _warm_up(self, contexts: dict, staging: "PinnedStaging | None") -> None:
        """Run each batch size once on zeros (inputs the engine declares; a stand-in engine declares none), the way
        requests run (their pinned buffers made too)."""
        for size, engine in self.engines.items():
            feed = _zeros(engine, size)
            if feed is None:
                continue
            try:
                started = time.perf_counter_ns()
                contexts[size].execute(feed if staging is None else staging.stack([feed], size, size))
                self._last_compute_ns = time.perf_counter_ns() - started  # first runs: an upper bound
            except Exception as error:  # zeros may be no valid input (indices, shape tensors): requests will tell
                log.warning("model %r: warm-up at batch %d failed (%s); first requests of that size pay for it",
                            self.settings.name, size, error)

    def _next_batch(self, instance: Instance) -> list[Request] | None:
        settings = self.settings
        with self._ready:
            while True:
                # a lent instance runs on its borrower's thread; a batch being gathered takes the queue's head
                while not self._queue or instance.lent or self._gathering:
                    if self._closing and not self._queue:
                        return None
                    self._ready.wait()
                first = self._pop()
                if self._claim(first):
                    break
            batch = [first]
            if settings.dynamic_batching:
                self._gathering = True
                try:
                    self._gather(batch)
                finally:
                    self._gathering = False
                    if self._closing:  # threads that held back for this gathering may now stop
                        self._ready.notify_all()
                    elif self._queue:
                        self._ready.notify()  # the next batch's gatherer
            self._busy += len(batch)
            return batch

    def _gather(self, batch: list[Request]) -> None:
        """Under `_ready`: add queued requests of the first one's signature to `batch` until it holds the target
        rows or the first request has waited max_queue_delay_us."""
        settings = self.settings
        first = batch[0]
        rows = first.rows
        target = max(settings.preferred_batch_sizes, default=settings.max_batch_size)
        deadline = first.enqueued_ns + settings.max_queue_delay_us * 1000
        while rows < target:
            if self._queue:
                following = self._queue[0]
                if rows + following.rows > settings.max_batch_size or following.signature != first.signature:
                    return
                request = self._pop()
                if self._claim(request):
                    batch.append(request)
                    rows += request.rows
                continue
            left_s = (deadline - time.perf_counter_ns()) / 1e9
            if left_s <= 0 or self._closing:
                return
            self._wanted_rows = target - rows
            self._more.wait(left_s)
            self._wanted_rows = 0

    def _pop(self) -> Request:
        request = self._queue.popleft()
        self._queued_rows -= request.rows
        return request

    def _claim(self, request: Request) -> bool:
        """Mark `request` running (from now on its client cannot cancel it); False: it was cancelled, drop it."""
        if request.future.set_running_or_notify_cancel():
            return True
        self.stats.record_cancelled()
        return False

    def _run(self, batch: list[Request], contexts: dict, staging: "PinnedStaging | None" = None) -> None:
        started = time.perf_counter_ns()
        rows = sum(request.rows for request in batch)
        try:
            size = self._engine_size(rows)
            feeds = [request.inputs for request in batch]
            if staging is None:
                outputs = contexts[size].execute(_stack(feeds, rows, size))
            else:  # gathered into pinned memory, from which the engine's input copy is one DMA
                outputs = _host_arrays(contexts[size].execute(staging.stack(feeds, rows, size)))
        except Exception as error:  # an engine failure answers every request of the batch, and the thread lives on
            now = time.perf_counter_ns()
            self.stats.record_failure(now - started, len(batch))
            for request in batch:
                _answer(request.future, error=error)
            wake_waiters(batch)
            return
        finished = time.perf_counter_ns()
        self._last_compute_ns = finished - started
        self.stats.record_batch(rows, [started - r.enqueued_ns for r in batch], finished - started,
                                [finished - r.enqueued_ns for r in batch])
        if size == 0:
            _answer(batch[0].future, outputs)
        else:
            start = 0
            for request in batch:  # views into the batch's outputs: no copy
                _answer(request.future, {name: value[start:start + request.rows] for name, value in outputs.items()})
                start += request.rows
        wake_waiters(batch)

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


def _signature(inputs: dict[str, np.ndarray]) -> tuple:
    return tuple(sorted((name, value.shape[1:]) for name, value in inputs.items()))


def _contexts(engines: Mapping[int, object]) -> dict:
    """{batch size: execution context}, one context per engine (an engine with profiles serves several sizes and
    keeps a specialization for each)."""
    from .engines import is_profiled

    made: dict[int, object] = {}
    contexts = {}
    for size, engine in engines.items():
        if id(engine) not in made:
            sizes = sum(1 for other in engines.values() if other is engine)
            made[id(engine)] = (engine.create_execution_context(max_shapes=max(sizes, 8)) if is_profiled(engine)
                                else engine.create_execution_context())
        contexts[size] = made[id(engine)]
    return contexts


def _device_type(engines: Mapping[int, object]) -> str:
    """cuda where an engine runs on a GPU, else cpu (stand-in engines in tests have no device)."""
    devices = {getattr(getattr(engine, "device", None), "type", "cpu") for engine in engines.values()}
    return "cuda" if "cuda" in devices else "cpu"


def _instance_stream(engines: Mapping[int, object]):
    """A CUDA stream of the instance's own where the engines run on a GPU; None on the CPU."""
    if _device_type(engines) != "cuda":
        return None
    import torch

    device = next(engine.device for engine in engines.values() if getattr(engine, "device", None) is not None
                  and engine.device.type == "cuda")
    return torch.cuda.Stream(device)


def _current_stream(stream):
    """`stream` made current in the calling thread (torch's current stream is per thread) while the block runs."""
    if stream is None:
        return contextlib.nullcontext()
    import torch

    return torch.cuda.stream(stream)


class SharedExclusiveLock:
    """Many holders of `shared`, or one of `exclusive`; a waiting `exclusive` holds new `shared` back."""

    def __init__(self):
        self._condition = threading.Condition()
        self._sharing = 0
        self._exclusive = False
        self._waiting = 0  # exclusive holders waiting

    @contextlib.contextmanager
    def shared(self):
        with self._condition:
            while self._exclusive or self._waiting:
                self._condition.wait()
            self._sharing += 1
        try:
            yield
        finally:
            self.release_shared()

    def try_shared(self) -> bool:
        """Take it shared if that needs no wait (True); release with release_shared."""
        with self._condition:
            if self._exclusive or self._waiting:
                return False
            self._sharing += 1
            return True

    def release_shared(self) -> None:
        with self._condition:
            self._sharing -= 1
            if not self._sharing:
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        with self._condition:
            self._waiting += 1
            while self._exclusive or self._sharing:
                self._condition.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


# GPU instances warm up (specializations, CUDA graph captures) one at a time and while no GPU instance runs: a
# graph capture in CUDA's global mode forbids other threads' potentially unsafe CUDA calls (a synchronization, an
# allocation) while it lasts, and an instance's batches synchronize their stream. Batches take it shared.
GPU_WORK = SharedExclusiveLock()


class PinnedStaging:
    """An instance's host buffers for a GPU, reused batch after batch: per input (and non-batch shape) one buffer of
    the largest batch met, of which a batch takes its first rows. A batch's requests are gathered into it (the one
    copy the server makes of their tensors; padding rows zeroed) and the engine copies it to the GPU with one DMA
    (pageable memory would be staged by the driver first). Reuse is safe: `execute` waits for its stream, the copy
    included, before the next batch is gathered. `pin=False`: ordinary memory (CPU tests of the gathering)."""

    MAX_BUFFERS = 32  # bounded: an engine with profiles may take many shapes

    def __init__(self, pin: bool = True):
        self.pin = pin
        self._buffers: collections.OrderedDict[tuple, object] = collections.OrderedDict()

    def stack(self, feeds: list[dict[str, np.ndarray]], rows: int, size: int) -> dict:
        stacked = {}
        for name, first in feeds[0].items():
            if size == 0:  # a model without batching: the request's own shape
                buffer = self._buffer((name, first.shape, first.dtype.str), first.shape, first.dtype, 0)
                np.copyto(buffer.numpy(), first)
                stacked[name] = buffer
                continue
            key = (name, first.shape[1:], first.dtype.str)
            buffer = self._buffer(key, (size, *first.shape[1:]), first.dtype, size)[:size]
            view = buffer.numpy()
            np.concatenate([feed[name] for feed in feeds], axis=0, out=view[:rows])
            view[rows:] = 0
            stacked[name] = buffer
        return stacked

    def _buffer(self, key: tuple, shape: tuple, dtype: np.dtype, rows: int):
        import torch

        buffer = self._buffers.get(key)
        if buffer is None or (rows and buffer.shape[0] < rows):
            buffer = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=self.pin)
            self._buffers[key] = buffer
            while len(self._buffers) > self.MAX_BUFFERS:
                self._buffers.popitem(last=False)
        self._buffers.move_to_end(key)
        return buffer


def _host_arrays(outputs: dict) -> dict[str, np.ndarray]:
    from ..runtime.context import _to_numpy

    return {name: _to_numpy(value) for name, value in outputs.items()}


def _zeros(engine, size: int) -> dict[str, np.ndarray] | None:
    """Zero inputs of a batch of `size` rows (0: the engine's own shapes; an engine with profiles: profile 0's opt
    shapes), or None where the engine does not say its inputs."""
    from .engines import is_profiled

    specs = getattr(engine, "inputs", ())
    if not specs:
        return None
    profile = engine.profiles[0] if is_profiled(engine) else None
    feed = {}
    for spec in specs:
        shape_range = profile.range_of(spec.name) if profile is not None else None
        if profile is not None and shape_range is None:
            return None  # a shape tensor: its values are the model's business
        shape = tuple(shape_range.opt) if shape_range is not None else tuple(spec.shape)
        if size:
            shape = (size, *shape[1:])
        feed[spec.name] = np.zeros(shape, dtype=spec.dtype.numpy)
    return feed


def _stack(feeds: list[dict[str, np.ndarray]], rows: int, size: int) -> dict[str, np.ndarray]:
    """The batch's inputs as one array per name, padded with zeros to the engine's `size` rows (one copy)."""
    if size == 0 or (len(feeds) == 1 and rows == size):
        return feeds[0]
    stacked = {}
    for name, first in feeds[0].items():
        out = np.empty((size, *first.shape[1:]), dtype=first.dtype)
        np.concatenate([feed[name] for feed in feeds], axis=0, out=out[:rows])
        out[rows:] = 0  # only the padding: the rest was just written
        stacked[name] = out
    return stacked
