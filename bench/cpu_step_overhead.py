"""Per-step host overhead of CPU execution: the static executor against the step-by-step path it replaced.

    python bench/cpu_step_overhead.py [--runs 300] [--threads 1]

For small models (Silero VAD, PP-OCR cls, MTCNN RNet) the time per execution is mostly Python around small kernels.
Per model, medians of `--runs` runs after warm-up, in microseconds:
- `static`: ExecutionContext.execute(feed) as users call it (the static executor, bound kernels);
- `step-by-step`: the same context's step-by-step path (`_run_steps`: a dictionary of names, the registered kernels
  called with their op each time), which ran every CPU execution before the static executor, plus the same input
  checks and output conversion;
- `dispatch/step`: what the executor alone costs per step: each step's call replaced by one that returns that step's
  results from a first run (no kernel work), for the static program and for the step-by-step path.
The outputs of both paths are compared first (they agree to float32 rounding).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorkiln as tk  # noqa: E402  (before torch: idle OpenMP threads sleep)
import torch  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_suite import MODELS, SHARED, fixed_inputs, make_feed  # noqa: E402

NAMES = ("silero_vad", "ppocr_cls", "mtcnn_rnet")


def median_us(fn, runs: int) -> float:
    for _ in range(max(runs // 10, 5)):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def measure(name: str, runs: int) -> dict[str, float]:
    source, shapes, _ = MODELS[name]
    engine = tk.Builder().build(parse_onnx(SHARED / source, input_shapes=shapes,
                                           input_values=fixed_inputs(name) or None))
    context = engine.create_execution_context()
    feed = {k: v for k, v in make_feed(name).items() if k in {s.name for s in engine.inputs}}

    def step_by_step():
        checked, _ = context._check_inputs(feed)
        with torch.inference_mode():
            outputs = context._run_steps(context._prepared(checked))
        return {k: v.numpy() for k, v in outputs.items()}

    fast, slow = context.execute(feed), step_by_step()
    for key in fast:
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-5, atol=1e-6)
    steps = len(engine.plan.steps)
    result = {"steps": steps, "static_us": median_us(lambda: context.execute(feed), runs),
              "step_by_step_us": median_us(step_by_step, runs)}
    result.update(_dispatch_only(context, feed, runs, steps))
    return result


def _dispatch_only(context, feed, runs: int, steps: int) -> dict[str, float]:
    """Per-step cost of each executor with every kernel replaced by a lookup of its first run's results."""
    prepared = context._prepared(context._check_inputs(feed)[0])
    recorded: list = []
    with torch.inference_mode():
        context._run_steps(dict(prepared), hook=lambda index, launch, args: recorded.append(launch()) or recorded[-1])
    static = context._static
    saved_program, saved_steps = static._program, context._steps
    try:
        static._program = tuple((lambda args, r=r: r, *rest) for (_, *rest), r in zip(saved_program, recorded))
        context._steps = [(lambda op, args, r=r: r, *rest) for (_, *rest), r in zip(saved_steps, recorded)]
        with torch.inference_mode():
            static_us = median_us(lambda: static.run(prepared), runs)
            old_us = median_us(lambda: context._run_steps(dict(prepared)), runs)
    finally:
        static._program, context._steps = saved_program, saved_steps
    return {"dispatch_per_step_static_us": static_us / steps, "dispatch_per_step_old_us": old_us / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s); medians of {args.runs} runs, microseconds\n")
    print("| model | steps | step-by-step | static | dispatch/step: step-by-step | dispatch/step: static |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in NAMES:
        r = measure(name, args.runs)
        print(f"| {name} | {r['steps']} | {r['step_by_step_us']:.0f} | {r['static_us']:.0f} | "
              f"{r['dispatch_per_step_old_us']:.2f} | {r['dispatch_per_step_static_us']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
