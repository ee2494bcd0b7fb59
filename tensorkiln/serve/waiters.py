"""Requests awaited from an event loop (the front ends'): each carries a waiter, an asyncio.Future of its caller's
loop, and an instance thread that answers a batch hands the outcomes over with one call per loop. asyncio's
wrap_future would make one call per request, each waking the loop and handing it the GIL: at a batch of 64, 64
hand-overs between the instance thread and the loop instead of one."""
from __future__ import annotations

import asyncio

import numpy as np


def wake_waiters(batch: list) -> None:
    """Hand the answered requests' outcomes to the event loops awaiting them: one call per loop and batch (asyncio's
    wrap_future makes one per request: a wake-up of the loop, and a hand-over of the GIL, for each)."""
    by_loop: dict = {}
    for request in batch:
        if request.waiter is not None:
            by_loop.setdefault(request.waiter.get_loop(), []).append(request)
    for loop, requests in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, requests)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _settle(requests: list) -> None:
    """On the waiters' loop: each waiter gets its request's outcome, unless its caller stopped waiting."""
    for request in requests:
        waiter, future = request.waiter, request.future
        if waiter.done() or future.cancelled():
            continue
        error = future.exception()
        if error is None:
            waiter.set_result(future.result())
        else:
            waiter.set_exception(error)


async def outputs_of(scheduler, inputs: dict[str, np.ndarray], rows: int):
    """The outputs of a request submitted from an event loop: run inline where the scheduler can, else awaited on a
    waiter of this loop. Cancelling the wait cancels the request (a queued one is then dropped unrun)."""
    future, waiter = submit_awaitable(scheduler, inputs, rows)
    if waiter is None:
        return future.result()
    try:
        return await waiter
    except asyncio.CancelledError:
        future.cancel()
        raise


def submit_awaitable(scheduler, inputs: dict[str, np.ndarray], rows: int):
    """(the request's Future, the waiter to await on this loop, or None where it ran inline and is answered)."""
    waiter = asyncio.get_running_loop().create_future()
    future = scheduler.submit(inputs, rows, inline=True, waiter=waiter)
    if future.done():
        waiter.cancel()
        return future, None
    return future, waiter
