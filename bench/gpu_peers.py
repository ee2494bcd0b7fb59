"""GPU benchmark: tensorkiln engines side by side with PyTorch eager and torch.compile, on the same inputs.

    python bench/gpu_peers.py [--workloads resnet50:1,resnet50:256,...] [--compile-batch-limit 1] [--out DIR]

Per workload: the PyTorch model in FP32 gives the reference; every candidate's output is checked against
it first (FP16 tolerance) and only then timed: median of CUDA-event timings of single runs after warm-up,
random inputs. Reports latency, throughput, peak GPU memory, build time and the ratio to each peer.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorkiln as tk  # noqa: E402
from tensorkiln.builder import BuilderConfig, Target  # noqa: E402
from tensorkiln.cli.build import parse_tactic_sources  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.quant.precision import Precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peaks import median_cuda_ms  # noqa: E402
from models import make_inputs, make_model, randomize_batchnorm  # noqa: E402

WARMUP, RUNS = 20, 100  # timed calls: the median of RUNS after WARMUP
DEFAULT_WORKLOADS = "resnet50:1,resnet50:256,mobilenet_v2:1,mobilenet_v2:256,bert_base:1,bert_base:128"
FP16_TOLERANCE = 3e-2  # max |out - ref| / max |ref| against the FP32 PyTorch model


def peak_memory_mb(fn, held: int) -> float:
    """Peak GPU memory of `fn()` in MiB beyond `held` bytes (what the harness holds: the caller's inputs, the
    reference, the FP32 model): each candidate is charged its weights, activations, workspaces and buffers."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - held) / 2**20


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def export_onnx(model, inputs: dict, path: str) -> None:
    """The workload as tensorkiln reads it: ONNX opset 17, one output named "output"."""
    torch.onnx.export(model, tuple(inputs.values()), path, input_names=list(inputs), output_names=["output"],
                      opset_version=17, dynamo=False)


def bench_tensorkiln(name, model, inputs, reference, cache_path, opt_level, disabled_sources=()):
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = os.path.join(folder, f"{name}.onnx")
        export_onnx(model, inputs, onnx_path)
        # without --timing-cache each workload starts from an empty cache of its own: "cold" then times every
        # tactic (Triton's own compile cache, ~/.triton, stays warm from the workloads before it in the same call)
        config = BuilderConfig(target=Target.CUDA, precision=Precision.FP16,
                               timing_cache=cache_path or os.path.join(folder, "timing.cache"), opt_level=opt_level,
                               disabled_tactic_sources=disabled_sources)
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated()  # before the engine exists: its weights count against it
        builds = []
        for _ in range(2):  # cold, then with the timing cache the first build wrote
            start = time.perf_counter()
            builder = tk.Builder(config)
            engine = builder.build(parse_onnx(onnx_path))
            builds.append(time.perf_counter() - start)
            torch.cuda.synchronize()
    context = engine.create_execution_context()  # the only context: its first run captures the CUDA graph
    outputs = {}
    # weights, the graph's input buffers and pool, warm-up and capture together
    peak_mb = peak_memory_mb(lambda: outputs.update(context.execute(dict(inputs))), held)
    output = outputs["output"]
    error = relative_error(output, reference)
    result = {"build_s": builds[0], "build_warm_s": builds[1], "error": error, "steps": engine.num_layers,
              "log_tail": builder.build_log[-4:]}
    result["arena_mb"] = engine.arena_nbytes / 2**20
    if error > FP16_TOLERANCE:
        result["status"] = "MISMATCH"
        return result, engine
    result["latency_ms"] = median_cuda_ms(lambda: context.execute_async(inputs), WARMUP, RUNS)
    # inputs bound where they lie (set_input_tensor, like TensorRT's set_tensor_address): no copy before the replay
    for input_name, value in inputs.items():
        context.set_input_tensor(input_name, value)
    result["bound_latency_ms"] = median_cuda_ms(context.execute_async, WARMUP, RUNS)
    result["peak_mb"] = peak_mb
    result["tactics"] = dict(collections.Counter(step.tactic for step in engine.plan.steps).most_common())
    profile = context.profile(dict(inputs), runs=5)  # each step's GPU time inside a CUDA graph
    total = sum(seconds for *_, seconds in profile)
    result["profile_top"] = [[name, tactic, round(seconds * 1e3, 4), round(100 * seconds / total, 1)]
                             for name, _, tactic, seconds in sorted(profile, key=lambda r: -r[3])[:12]]
    result["profile_by_kind_ms"] = {kind: round(sum(r[3] for r in profile if r[1] == kind) * 1e3, 3)
                                    for kind in sorted({r[1] for r in profile})}
    return result, engine


def bench_eager(model, inputs, reference, channels_last):
    half = model.half()
    if channels_last:
        half = half.to(memory_format=torch.channels_last)
    args = [v.half() if v.is_floating_point() else v for v in inputs.values()]
    if channels_last:
        args = [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]
    with torch.inference_mode():
        error = relative_error(half(*args), reference)
        latency = median_cuda_ms(lambda: half(*args), WARMUP, RUNS)
        weights = sum(p.numel() * p.element_size() for p in half.parameters())
        peak = peak_memory_mb(lambda: half(*args), torch.cuda.memory_allocated() - weights)
    return {"latency_ms": latency, "error": error, "peak_mb": peak}, half, args


def bench_compile(model, args, reference, mode):
    start = time.perf_counter()
    compiled = torch.compile(model, mode=mode)
    with torch.inference_mode():
        output = compiled(*args)
        torch.cuda.synchronize()
        build = time.perf_counter() - start
        error = relative_error(output, reference)
        latency = median_cuda_ms(lambda: compiled(*args), WARMUP, RUNS)
    return {"latency_ms": latency, "error": error, "build_s": build, "mode": mode}


def run_workload(name, batch, args, rows):
    torch.manual_seed(0)
    model = make_model(name).eval().cuda()
    randomize_batchnorm(model)
    inputs = make_inputs(name, batch, "cuda")
    with torch.inference_mode():
        reference = model(*inputs.values()).float()
    row = {"workload": f"{name} b{batch}", "batch": batch}
    row["tensorkiln"], _ = bench_tensorkiln(name, model, inputs, reference, args.timing_cache, args.opt_level,
                                            parse_tactic_sources(args.tactic_sources))
    row["eager"], half, half_args = bench_eager(model, inputs, reference, channels_last=name != "bert_base")
    if batch <= args.compile_batch_limit:
        row["compile"] = bench_compile(half, half_args, reference, "max-autotune")
    else:
        row["compile"] = {"status": f"skipped (batch > {args.compile_batch_limit}; max-autotune builds take minutes)"}
    rows.append(row)
    print(json.dumps(row), flush=True)
    write_results(rows, args.out)  # after every workload: a call stopped by its time limit keeps the rows before
    del model, half
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS, help="comma-separated name:batch pairs")
    parser.add_argument("--compile-batch-limit", type=int, default=1,
                        help="run torch.compile(max-autotune) only up to this batch size")
    parser.add_argument("--opt-level", type=int, default=2, help="tensorkiln tactic timing effort (0..5)")
    parser.add_argument("--timing-cache", default=None,
                        help="timing cache file shared by every workload and kept (default: a new one per workload)")
    parser.add_argument("--tactic-sources", default=None, metavar="[+-]SOURCE,...",
                        help="tensorkiln's tactic sources, as kiln build takes them (e.g. -cublaslt)")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for results.json and RESULTS.md")
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    for item in args.workloads.split(","):
        name, batch = item.split(":")
        try:
            run_workload(name, int(batch), args, rows)
        except Exception as error:  # one failing workload must not hide the others' figures
            print(f"{item}: FAILED {type(error).__name__}: {error}", flush=True)
            rows.append({"workload": item, "failed": f"{type(error).__name__}: {error}"})
    print(write_results(rows, args.out))


def write_results(rows, out: str) -> str:
    """results.json and the table (RESULTS.md) under `out`; returns the table."""
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "results.json").write_text(json.dumps(rows, indent=1))
    table = format_table(rows)
    Path(out, "RESULTS.md").write_text(table)
    return table


def format_table(rows) -> str:
    lines = ["| workload | tensorkiln ms | tk bound ms | eager ms | compile ms | items/s (tk) | vs eager | vs compile | "
             "peak MB tk / eager | build s cold / warm | error tk |", "|" + " --- |" * 11]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['workload']} | failed: {row['failed'][:80]} |" + " |" * 9)
            continue
        tk_row, eager, compiled = row["tensorkiln"], row["eager"], row["compile"]
        tk_ms = tk_row.get("latency_ms")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        ratio = lambda peer: "-" if tk_ms is None or peer is None else f"{peer / tk_ms:.2f}x"  # noqa: E731
        lines.append(f"| {row['workload']} | {fmt(tk_ms) if tk_ms else tk_row.get('status')} | "
                     f"{fmt(tk_row.get('bound_latency_ms'))} | "
                     f"{fmt(eager['latency_ms'])} | {fmt(compiled.get('latency_ms')) if 'latency_ms' in compiled else '-'}"
                     f" | {row['batch'] * 1000 / tk_ms if tk_ms else 0:,.0f} | {ratio(eager['latency_ms'])} | "
                     f"{ratio(compiled.get('latency_ms'))} | {tk_row.get('peak_mb', 0):.0f} / {eager['peak_mb']:.0f} | "
                     f"{tk_row['build_s']:.1f} / {tk_row['build_warm_s']:.1f} | {tk_row['error']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
