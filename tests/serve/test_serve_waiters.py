"""waiters: requests awaited from an event loop are handed their outcomes with one call into the loop per batch,
errors included, and a cancelled wait cancels its queued request."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tensorkiln.serve.config import ModelSettings
from tensorkiln.serve.scheduler import Scheduler
from tensorkiln.serve.stats import ModelStats
from tensorkiln.serve.waiters import outputs_of
from test_serve_batching import RecordingEngine
from test_serve_faults import SlowEngine


class FailingEngine(RecordingEngine):
    def execute(self, feed):
        raise RuntimeError("the engine failed")


def _batching(engine, delay_us: int = 2_000_000) -> Scheduler:
    settings = ModelSettings("m", max_batch_size=4, dynamic_batching=True, preferred_batch_sizes=(4,),
                             max_queue_delay_us=delay_us, instance_count=2)
    return Scheduler(settings, {size: engine for size in range(1, 5)}, ModelStats())


async def _together(scheduler, values) -> tuple[list, int]:
    """Each value's outcome, and the calls made into this loop from other threads meanwhile."""
    loop = asyncio.get_running_loop()
    calls = []
    original = loop.call_soon_threadsafe
    loop.call_soon_threadsafe = lambda *args, **kwargs: (calls.append(args[0]), original(*args, **kwargs))[1]
    inputs = [{"x": np.full((1, 2), value, np.float32)} for value in values]
    outcomes = await asyncio.gather(*(outputs_of(scheduler, x, 1) for x in inputs), return_exceptions=True)
    return outcomes, len(calls)


def test_a_batch_is_handed_over_with_one_call_into_the_loop():
    engine = RecordingEngine()
    scheduler = _batching(engine)
    outcomes, calls = asyncio.run(_together(scheduler, [1, 2, 3, 4]))
    assert [o["y"][0, 0] for o in outcomes] == [2, 4, 6, 8] and engine.batches == [(4, 2)]
    assert calls == 1  # asyncio.wrap_future: one per request
    scheduler.close()


def test_an_engine_failure_reaches_every_waiter_of_the_batch():
    scheduler = _batching(FailingEngine())
    outcomes, calls = asyncio.run(_together(scheduler, [1, 2, 3, 4]))
    assert all(isinstance(o, RuntimeError) and "the engine failed" in str(o) for o in outcomes) and calls == 1
    scheduler.close()


def test_a_cancelled_wait_drops_its_queued_request_unrun():
    stats = ModelStats()
    scheduler = Scheduler(ModelSettings("slow"), {0: SlowEngine(0.2)}, stats)

    async def leave_early():
        running = asyncio.ensure_future(outputs_of(scheduler, {"x": np.zeros(1, np.float32)}, 1))
        queued = asyncio.ensure_future(outputs_of(scheduler, {"x": np.ones(1, np.float32)}, 1))
        await asyncio.sleep(0.05)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        return (await running)["y"][0]

    assert asyncio.run(leave_early()) == 1
    scheduler.close()
    assert stats.cancelled == 1 and stats.execution_count == 1
