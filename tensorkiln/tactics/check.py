"""Layer-wise check of an engine's tactics: run the engine step by step on its own activations and compare each
step's result with the portable torch kernel computing in FP32 on the same inputs (polygraphy's layer-wise
comparison, for tensorkiln). It separates a wrong kernel (a large error at one step) from the drift a reduced
precision accumulates over a deep network (small errors at every step)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..kernels.registry import get_kernel


@dataclasses.dataclass(frozen=True)
class StepError:
    error: float  # max |tactic - fp32 portable| over max |fp32 portable|
    step: str
    tactic: str
    output: str


def layerwise_errors(engine, inputs: Mapping[str, Any]) -> list[StepError]:
    """One StepError per floating-point output of every step, in execution order."""
    steps, found = engine.plan.steps, []

    def compare(index: int, launch, args):
        results = launch()
        step = steps[index]
        reference = get_kernel(step.kind, engine.device.type)(
            step.op, [a.float() if a is not None and a.is_floating_point() else a for a in args])
        for name, got, want in zip(step.outputs, results, reference):
            if got.is_floating_point():
                got, want = got.float(), want.float()
                error = float((got - want).abs().nan_to_num(float("inf")).max()
                              / want.abs().max().clamp_min(1e-6)) if got.numel() else 0.0
                found.append(StepError(error, step.name, step.tactic, name))
        return results

    engine.create_execution_context(cuda_graph=False).run_each_step(inputs, compare)
    return found
