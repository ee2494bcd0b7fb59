"""INT8 engines on the CPU (issue 19): the FP32 engine against the INT8 engine of the same model in one process, runs
alternating between the two (median of --runs after warm-up, random inputs), and each output's SQNR against PyTorch
in FP32. The models are bench/cpu_suite.py's torchvision CNNs (random weights, randomized BatchNorm statistics,
torch.onnx.export at opset 17); calibration: minmax on --calib-batches random batches.

    python bench/int8_cpu.py [--models resnet50,mobilenet_v2] [--runs 20] [--out int8_cpu.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tensorkiln as tk  # noqa: E402
from bench.cpu_suite import _cnn  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.quant.calibrator import DataCalibrator  # noqa: E402
from tensorkiln.quant.int8 import Int8Options  # noqa: E402


def sqnr_db(value: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10((reference ** 2).sum() / max(((value - reference) ** 2).sum(), 1e-30)))


def alternating_ms(contexts: dict, feed: dict, warmup: int, runs: int) -> dict[str, float]:
    """Median wall-clock milliseconds of each context's run, the contexts taking turns run by run."""
    samples: dict[str, list[float]] = {name: [] for name in contexts}
    for index in range(warmup + runs):
        for name, context in contexts.items():
            start = time.perf_counter()
            context.execute(feed)
            if index >= warmup:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def run_model(kind: str, args) -> dict:
    module = _cnn(kind)
    path = Path(tempfile.mkdtemp(prefix="int8_cpu_")) / f"{kind}.onnx"
    example = torch.randn(1, 3, 224, 224)
    torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(args.calib_batches)]
    row: dict = {"model": kind}
    engines = {}
    for name, config in (("fp32", tk.BuilderConfig()),
                         ("int8", tk.BuilderConfig(precision=tk.Precision.INT8,
                                                   int8=Int8Options(DataCalibrator(calibration, "minmax"))))):
        start = time.perf_counter()
        engines[name] = tk.Builder(config).build(parse_onnx(str(path)))
        row[f"{name}_build_s"] = round(time.perf_counter() - start, 2)
    row["int8_tactics"] = dict(collections.Counter(step.tactic for step in engines["int8"].plan.steps).most_common())
    feed = {"x": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
    with torch.inference_mode():
        reference = module(torch.from_numpy(feed["x"])).numpy()
    contexts = {name: engine.create_execution_context() for name, engine in engines.items()}
    for name, context in contexts.items():
        (output,) = context.execute(feed).values()
        row[f"{name}_sqnr_db"] = round(sqnr_db(np.asarray(output), reference), 2)
    latencies = alternating_ms(contexts, feed, args.warmup, args.runs)
    row.update({f"{name}_ms": round(value, 3) for name, value in latencies.items()})
    row["int8_speedup"] = round(latencies["fp32"] / latencies["int8"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="int8_cpu.json")
    args = parser.parse_args()
    rows = []
    for kind in args.models.split(","):
        rows.append(run_model(kind, args))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print("| model | FP32 ms | INT8 ms | INT8 speed-up | SQNR FP32 / INT8 dB |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['model']} | {row['fp32_ms']} | {row['int8_ms']} | {row['int8_speedup']}x | "
              f"{row['fp32_sqnr_db']} / {row['int8_sqnr_db']} |")


if __name__ == "__main__":
    main()
