"""Where a small batch's latency goes: the host's path through `execute_async`, or the GPU.

    python bench/host_overhead.py [--workloads resnet50:1,mobilenet_v2:1] [--rounds 5] [--out DIR]

At batch 1 an engine's CUDA graph runs in a few hundred microseconds, so the Python that precedes its launch shows
in the latency the harness reports (gpu_peers.py: CUDA events around one call, the GPU idle before it). Per
workload, after checking the output against PyTorch in FP32, this times in turns:
- `call`: `execute_async(inputs)` as gpu_peers.py times it (the table's "tensorkiln ms");
- `bound`: `execute_async()` on inputs bound with `set_input_tensor` (the table's "tk bound ms");
- `replay`: the graph's replay alone, as `call` would be with no host work before it (the input copy left out);
- `gpu`: the GPU's time per execution when 100 run back to back (the host's work overlaps the GPU's);
- `host`: the wall-clock time of the `execute_async` call itself, on the host.
It also writes the builder's per-layer tactic timings (`DIR/WORKLOAD.tactics.txt`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorkiln as tk  # noqa: E402
from tensorkiln.builder import BuilderConfig, Target  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.quant.precision import Precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peaks import median_cuda_ms  # noqa: E402
from gpu_peers import FP16_TOLERANCE, export_onnx, relative_error  # noqa: E402
from models import make_inputs, make_model, randomize_batchnorm  # noqa: E402

BACK_TO_BACK = 100


def back_to_back_ms(fn) -> float:
    """GPU milliseconds per call of `fn` when BACK_TO_BACK calls are enqueued without waiting."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(BACK_TO_BACK):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / BACK_TO_BACK


def host_ms(fn, runs: int = 200) -> float:
    """Median wall-clock milliseconds of the call `fn()` itself (the GPU finishes between calls)."""
    samples = []
    for _ in range(runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def measure(name: str, batch: int, rounds: int, out: Path) -> dict:
    torch.manual_seed(0)
    model = make_model(name).eval()
    randomize_batchnorm(model)
    inputs = make_inputs(name, batch, "cuda")
    model = model.cuda()
    with torch.no_grad():
        reference = model(*inputs.values())
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = os.path.join(folder, f"{name}.onnx")
        export_onnx(model, inputs, onnx_path)
        config = BuilderConfig(target=Target.CUDA, precision=Precision.FP16, opt_level=3,
                               timing_cache=os.path.join(folder, "timing.cache"))
        builder = tk.Builder(config)
        engine = builder.build(parse_onnx(onnx_path))
    (out / f"{name}_b{batch}.tactics.txt").write_text("\n".join(builder.build_log) + "\n")
    context = engine.create_execution_context()
    error = relative_error(context.execute(dict(inputs))["output"], reference)
    result = {"error": error, "steps": engine.num_layers}
    if error > FP16_TOLERANCE:
        return {**result, "status": "MISMATCH"}
    bound = engine.create_execution_context()
    for input_name, value in inputs.items():
        bound.set_input_tensor(input_name, value)
    bound.execute_async()  # captures its graph
    ways = {"call": lambda: context.execute_async(inputs), "bound": bound.execute_async,
            "replay": context._graph.replay}
    samples = {key: [] for key in (*ways, "gpu", "host")}
    for _ in range(rounds):
        for key, fn in ways.items():
            samples[key].append(median_cuda_ms(fn, 20, 100))
        samples["gpu"].append(back_to_back_ms(ways["call"]))
        samples["host"].append(host_ms(ways["call"]))
    for key, values in samples.items():
        result[key + "_ms"] = round(statistics.median(values), 4)
        result[key + "_rounds"] = [round(v, 4) for v in values]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="resnet50:1,mobilenet_v2:1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"device": torch.cuda.get_device_name()}
    for workload in args.workloads.split(","):
        name, batch = workload.split(":")
        results[workload] = measure(name, int(batch), args.rounds, out)
        print(workload, json.dumps(results[workload]), flush=True)
    (out / "host_overhead.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
