"""Per-model counters (the statistics extension's fields; /metrics reads the same numbers at scrape time)."""
from __future__ import annotations

import dataclasses
import threading
import time


@dataclasses.dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclasses.dataclass
class ModelStats:
    """Mutated under `lock` by the scheduler's threads; read under it by the front ends."""
    success: Duration = dataclasses.field(default_factory=Duration)  # request end to end (queue + compute)
    fail: Duration = dataclasses.field(default_factory=Duration)
    queue: Duration = dataclasses.field(default_factory=Duration)
    compute_infer: Duration = dataclasses.field(default_factory=Duration)
    inference_count: int = 0  # rows inferred (a request of batch 4 counts 4)
    execution_count: int = 0  # engine executions (a dynamic batch of 8 requests counts 1)
    rejected: int = 0  # refused at the door: full queue, unloading
    cancelled: int = 0  # accepted, then dropped unrun because the client went away (disconnect, cancelled call)
    last_inference_ms: int = 0
    batch_sizes: dict[int, Duration] = dataclasses.field(default_factory=dict)  # executed batch size -> compute
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def record_batch(self, rows: int, queue_ns: list[int], compute_ns: int, total_ns: list[int]) -> None:
        with self.lock:
            self.execution_count += 1
            self.inference_count += rows
            self.last_inference_ms = int(time.time() * 1000)
            self.compute_infer.add(compute_ns * len(queue_ns), len(queue_ns))
            self.batch_sizes.setdefault(rows, Duration()).add(compute_ns)
            for waited, total in zip(queue_ns, total_ns):
                self.queue.add(waited)
                self.success.add(total)

    def record_failure(self, ns: int, count: int = 1) -> None:
        with self.lock:
            self.fail.add(ns * count, count)

    def record_rejection(self) -> None:
        with self.lock:
            self.rejected += 1

    def record_cancelled(self, count: int = 1) -> None:
        with self.lock:
            self.cancelled += count

    def snapshot(self) -> dict:
        with self.lock:
            return {"success": dataclasses.astuple(self.success), "fail": dataclasses.astuple(self.fail),
                    "queue": dataclasses.astuple(self.queue), "compute_infer": dataclasses.astuple(self.compute_infer),
                    "inference_count": self.inference_count, "execution_count": self.execution_count,
                    "rejected": self.rejected, "cancelled": self.cancelled,
                    "last_inference_ms": self.last_inference_ms,
                    "batch_sizes": {size: dataclasses.astuple(d) for size, d in sorted(self.batch_sizes.items())}}
