"""What the demo measures and reports about any engine: the optimizations the build applied, latency and
throughput, and the onnxruntime peer (imported lazily: it is a test extra, not a dependency)."""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable

import numpy as np

WARMUP_RUNS = 3  # first-use setup (weight packing, CUDA graph capture, onnxruntime's arena) stays out of the figures


@dataclasses.dataclass(frozen=True)
class Optimizations:
    """What the build did to a network, from the engine's build info."""
    layers_before: int
    steps_after: int
    rewrites: tuple[tuple[str, int], ...]  # ("fuse_vertical.activation", 34): every rewrite that fired, in order
    tactics: tuple[tuple[str, int], ...]  # ("cpu.fused_convolution.torch", 41): the kernels chosen, most used first
    fused_steps: int  # steps that run several of the original layers as one
    build_seconds: float


@dataclasses.dataclass(frozen=True)
class Latency:
    """Timed executions after a warm-up: per-execution latency and throughput in items (batch entries)."""
    runtime: str  # "tensorkiln", or "onnxruntime (CPUExecutionProvider)"
    iterations: int
    batch: int
    median_ms: float
    p90_ms: float
    items_per_second: float


def optimizations_of(engine) -> Optimizations:
    plan = engine.plan
    info = plan.build_info
    counts = info.get("pass_counts", {})
    tactics = collections.Counter(step.tactic for step in plan.steps).most_common()
    return Optimizations(layers_before=int(info.get("layers_before", len(plan.steps))), steps_after=len(plan.steps),
                         rewrites=tuple((name, int(count)) for name, count in counts.items() if count),
                         tactics=tuple(tactics), fused_steps=sum(len(step.fused_from) > 1 for step in plan.steps),
                         build_seconds=float(info.get("build_seconds", 0.0)))


def measure(runtime: str, run: Callable[[], Any], iterations: int, batch: int) -> Latency:
    """Time `iterations` calls of `run` after WARMUP_RUNS untimed ones; each call returns only when done."""
    for _ in range(WARMUP_RUNS):
        run()
    seconds = []
    start = time.perf_counter()
    for _ in range(iterations):
        begin = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - begin)
    total = time.perf_counter() - start
    ms = np.array(seconds) * 1000
    return Latency(runtime, iterations, batch, float(np.median(ms)), float(np.percentile(ms, 90)),
                   iterations * batch / total)


def as_numpy(value) -> np.ndarray:
    """An engine output as numpy (outputs of a CUDA engine may be torch tensors on the device)."""
    if isinstance(value, np.ndarray):
        return value
    return value.detach().float().cpu().numpy()


@dataclasses.dataclass(frozen=True)
class OnnxRuntimePeer:
    """An onnxruntime session of a model on the same machine, on the provider matching the engine's device."""
    session: Any
    provider: str

    @property
    def name(self) -> str:
        return f"onnxruntime ({self.provider})"

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feed)


def onnxruntime_peer(model_path, device: str) -> OnnxRuntimePeer | str:
    """The peer session, or why there is none (a sentence for the report)."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime), so nothing was compared"
    available = onnxruntime.get_available_providers()
    provider = "CUDAExecutionProvider" if device == "cuda" and "CUDAExecutionProvider" in available \
        else "CPUExecutionProvider"
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: old exports draw one warning per initializer listed as an input
    session = onnxruntime.InferenceSession(str(model_path), options, providers=[provider])
    return OnnxRuntimePeer(session, provider)
