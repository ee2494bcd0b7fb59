"""What every model of the demo shares: its settings, the device choice, the build, and the facts of one run."""
from __future__ import annotations

import dataclasses
import time

from .bundled import BundledModel
from .measure import Latency, Optimizations, optimizations_of

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_ITERATIONS = 50


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    device: str = "auto"  # auto: the GPU when there is one, else the CPU
    iterations: int = DEFAULT_ITERATIONS  # timed executions of each runtime

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")


@dataclasses.dataclass(frozen=True)
class EngineRun:
    """The facts of one model's engine: where it ran, what the build did, how fast it ran."""
    model: BundledModel
    target: str  # "cpu", or "cuda (NVIDIA H200)"
    input_shape: tuple[int, ...]
    parse_seconds: float
    optimizations: Optimizations
    latency: Latency


def resolve_device(device: str) -> str:
    """cpu or cuda; auto takes the GPU when PyTorch sees one."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_engine(parse, device: str):
    """(engine, parse seconds): `parse()` gives the network; the engine is built FP32 for `device`."""
    from ..builder import Builder, BuilderConfig, Target

    start = time.perf_counter()
    network = parse()
    parse_seconds = time.perf_counter() - start
    return Builder(BuilderConfig(target=Target(device))).build(network), parse_seconds


def target_name(engine) -> str:
    plan = engine.plan
    return f"cuda ({plan.device_name})" if plan.target == "cuda" and plan.device_name else plan.target


def engine_run(model: BundledModel, engine, parse_seconds: float, latency: Latency) -> EngineRun:
    return EngineRun(model, target_name(engine), tuple(engine.inputs[0].shape), parse_seconds,
                     optimizations_of(engine), latency)
