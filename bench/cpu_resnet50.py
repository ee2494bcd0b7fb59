"""CPU latency of ResNet-50 (batch 1, FP32, 224x224): tensorkiln next to onnxruntime and PyTorch eager.

    python bench/cpu_resnet50.py [--runs 50] [--warmup 10] [--threads N]

One model with random weights (torchvision's architecture; written out in tests/models/torch_cnns.py where
torchvision is not installed) is exported to ONNX once (TorchScript exporter, opset 17). tensorkiln builds an
engine from that file, onnxruntime loads the same file (all graph optimizations on), PyTorch runs the module. The
outputs are checked against each other first (1e-4 relative); then they run in alternation, one run of each
per round, so that load from other processes hits all alike (onnxruntime with its spin-waiting off, which would
slow down whatever runs after it); figures are medians over the timed rounds.

Two tensorkiln rows: the engine as `Builder` makes it for the CPU (NHWC, channels-last activations and weights,
as for CUDA: the fused convolutions then run through oneDNN with packed weights, kernels/cpu/fused.py), and the
same plan forced to NCHW (the CPU layout before), for comparison.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.runtime.engine import Engine

RTOL = 1e-4


def resnet50() -> torch.nn.Module:
    """torchvision's ResNet-50 where installed, else the same architecture from the tests; random BN statistics."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
    import torch_cnns

    try:
        import torchvision

        model = torchvision.models.resnet50()
    except ImportError:
        model = torch_cnns.ResNet50()
    return torch_cnns.randomize(model)


def export(model: torch.nn.Module, x: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return path


def check(outputs: dict[str, np.ndarray]) -> None:
    reference = outputs["onnxruntime"]
    for name, value in outputs.items():
        error = np.max(np.abs(value.astype(np.float64) - reference)) / np.max(np.abs(reference))
        if error > RTOL:
            raise SystemExit(f"{name} differs from onnxruntime by {error:.2e} (relative); not timing it")


def time_alternating(runners: dict, warmup: int, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(warmup + runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed rounds (each runs every runtime once; >= 30)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every runtime")
    args = parser.parse_args()
    if args.runs < 30:
        parser.error("--runs must be at least 30: a median of fewer runs is noise")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = resnet50()
    x = torch.randn(1, 3, 224, 224)
    feed = {"x": x.numpy()}

    with tempfile.TemporaryDirectory() as folder:
        path = export(model, x, Path(folder) / "resnet50.onnx")
        start = time.perf_counter()
        engine = tk.Builder().build(parse_onnx(path))
        build_seconds = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.log_severity_level = 3
        # onnxruntime's pool threads spin for a while after each run, and whatever is timed next shares the cores
        # with them (+3.3 ms measured on MTCNN P-Net for the runtime after it); off, its own median here moves ~1 ms
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    context = engine.create_execution_context()
    nchw_plan = dataclasses.replace(engine.plan, build_info={**engine.plan.build_info, "channels_last": False})
    nchw_context = Engine(nchw_plan, engine.weights).create_execution_context()

    def eager():
        with torch.inference_mode():
            return model(x)

    runners = {"tensorkiln": lambda: context.execute(feed), "tensorkiln NCHW": lambda: nchw_context.execute(feed),
               "onnxruntime": lambda: session.run(None, feed), "pytorch eager": eager}
    check({"tensorkiln": next(iter(context.execute(feed).values())),
           "tensorkiln NCHW": next(iter(nchw_context.execute(feed).values())),
           "onnxruntime": session.run(None, feed)[0], "pytorch eager": eager().numpy()})
    times = time_alternating(runners, args.warmup, args.runs)
    report(engine, build_seconds, times, args)


def report(engine, build_seconds: float, times: dict[str, list[float]], args) -> None:
    plan = engine.plan
    memory = plan.memory
    print(f"ResNet-50, batch 1, FP32, 224x224 on {os.cpu_count()} CPUs ({args.threads} threads), torch "
          f"{torch.__version__}, onnxruntime {ort.__version__}; median of {args.runs} alternated runs after "
          f"{args.warmup} warm-up rounds; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"tensorkiln engine: {plan.build_info['layers_before']} layers -> {len(plan.steps)} steps, built in "
          f"{build_seconds:.2f} s, arena {memory.arena_bytes / 2**20:.1f} MiB for "
          f"{memory.activation_bytes / 2**20:.1f} MiB of activations\n")
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print("| runtime | median ms | p10 ms | p90 ms | vs onnxruntime | vs pytorch eager |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, values in times.items():
        ms = sorted(v * 1000 for v in values)
        p10, p90 = ms[len(ms) // 10], ms[(9 * len(ms)) // 10]
        print(f"| {name} | {medians[name]:.2f} | {p10:.2f} | {p90:.2f} | "
              f"{medians[name] / medians['onnxruntime']:.2f}x | {medians[name] / medians['pytorch eager']:.2f}x |")


if __name__ == "__main__":
    main()
