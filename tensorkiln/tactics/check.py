"""Layer-wise check of an engine's tactics: run the engine step by step on its own activations and compare each
step's result with the portable torch kernel computing in FP32 on the same inputs (polygraphy's layer-wise
comparison, for tensorkiln). It separates a wrong kernel (a large error at one step) from the drift a reduced
precision accumulates over a deep network (small errors at every step)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from ..kernels.registry import get_kernel
from ..runtime.context import float32_math


@dataclasses.dataclass(frozen=True)
class StepError:
    error: float  # max |tactic - fp32 portable| over max |fp32 portable|
    step: str
    tactic: str
    output: str


def layerwise_errors(engine, inputs: Mapping[str, Any]) -> list[StepError]:
    """One StepError per floating-point output of every step, in execution order."""
    context = engine.create_execution_context(cuda_graph=False)
    feed, _ = context._check_inputs(inputs)
    env = dict(engine.device_weights())
    env.update(feed)
    found = []
    with torch.inference_mode(), float32_math(engine.plan.precision):  # TF32 only where the engine allows it
        for (fn, op, in_names, out_names), compute, step in zip(context._steps, context._compute_dtypes,
                                                                  engine.plan.steps):
            args = [None if n is None else env[n] for n in in_names]
            if compute is not None:
                args = [a.to(compute) if a is not None and a.is_floating_point() else a for a in args]
            results = fn(op, args)
            reference = get_kernel(step.kind, engine.device.type)(
                op, [a.float() if a is not None and a.is_floating_point() else a for a in args])
            for name, got, want in zip(out_names, results, reference):
                if got.is_floating_point():
                    got, want = got.float(), want.float()
                    error = float((got - want).abs().nan_to_num(float("inf")).max()
                                  / want.abs().max().clamp_min(1e-6)) if got.numel() else 0.0
                    found.append(StepError(error, step.name, step.tactic, name))
            env.update(zip(out_names, results))
    return found
