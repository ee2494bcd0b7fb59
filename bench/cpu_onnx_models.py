"""CPU latency of tensorkiln engines next to onnxruntime on the shared ONNX models, same machine, same inputs.

    python bench/cpu_onnx_models.py [--runs 100] [--warmup 10] [--threads N]

Each model is built at the input shape below and saved as an engine file; the engine loaded from it is checked
against onnxruntime on the same random standard-normal inputs (those of `kiln bench --seed 0`): max |tk - ort|
within 1e-4 of the output's largest magnitude, plus 1e-6. Then two timings, medians after warm-up:

- alone: tensorkiln is `kiln bench ENGINE` in a fresh process, as a user runs it; onnxruntime is timed by
  itself with its default session options (its pool threads spin between runs);
- alternated: one run of each per round in this process, so that load from other processes hits both alike,
  with onnxruntime's spin-waiting off (its spinning threads would otherwise take the cores tensorkiln runs on
  next). tensorkiln's figure here depends on what the process freed before: glibc raises its mmap threshold
  once a large block is freed, and activations then come from the heap instead of fresh, page-faulting mmaps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

SHARED = Path(os.environ.get("TENSORKILN_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
MODELS = [("UltraFace RFB-320", "ultraface/version-RFB-320.onnx", {"input": (1, 3, 240, 320)}),
          ("UltraFace slim-320", "ultraface/version-slim-320.onnx", {"input": (1, 3, 240, 320)}),
          ("PP-OCRv4 det 640", "ppocrv4_det_cls/ch_PP-OCRv4_det_infer.onnx", {"x": (1, 3, 640, 640)}),
          ("PP-OCR cls", "ppocrv4_det_cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="timed runs (and alternated rounds) per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs before each timing")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both runtimes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} CPUs ({args.threads} threads), torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"medians of {args.runs} runs after {args.warmup} warm-up runs")
    print("| model | input | tensorkiln ms | onnxruntime ms | tk / ort | alternated: tensorkiln ms | "
          "alternated: onnxruntime ms (no spinning) | alternated: tk / ort | max abs diff |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="tensorkiln-bench-") as workdir:
        for label, path, shapes in MODELS:
            model = SHARED / "models/onnx" / path
            rng = np.random.default_rng(0)
            feed = {k: rng.standard_normal(v, dtype=np.float32) for k, v in shapes.items()}  # as `kiln bench --seed 0`
            engine_file = Path(workdir) / f"{Path(path).stem}.engine"
            tk.Builder().build(parse_onnx(model, input_shapes=shapes)).save(engine_file)
            context = tk.Runtime().load(engine_file).create_execution_context()
            spinning = ort.InferenceSession(str(model), _ort_options(args.threads, spin=True),
                                            providers=["CPUExecutionProvider"])
            quiet = ort.InferenceSession(str(model), _ort_options(args.threads, spin=False),
                                         providers=["CPUExecutionProvider"])
            ours, theirs = context.execute(feed), spinning.run(None, feed)
            worst = 0.0
            for value, reference in zip(ours.values(), theirs):
                # the absolute floor: on random inputs PP-OCR's probability map stays below 1e-3, where float
                # rounding alone (onnxruntime with and without its graph optimizations) differs by 2e-7
                difference = float(np.max(np.abs(value - reference)))
                assert difference <= 1e-4 * float(np.max(np.abs(reference))) + 1e-6, (label, difference)
                worst = max(worst, difference)
            runners = {"tk": lambda: context.execute(feed), "ort": lambda: quiet.run(None, feed)}
            alternated = _time({k: runners[k] for k in ("tk", "ort")}, args.warmup, args.runs)
            alone = {"tk": _kiln_bench(engine_file, args), **_time({"ort": lambda: spinning.run(None, feed)},
                                                                     args.warmup, args.runs)}
            shape = ", ".join("x".join(map(str, v)) for v in shapes.values())
            print(f"| {label} | {shape} | {alone['tk']:.2f} | {alone['ort']:.2f} | {alone['tk'] / alone['ort']:.2f} | "
                  f"{alternated['tk']:.2f} | {alternated['ort']:.2f} | {alternated['tk'] / alternated['ort']:.2f} | "
                  f"{worst:.1e} |", flush=True)


def _kiln_bench(engine_file: Path, args) -> float:
    """Median milliseconds of `kiln bench` on the engine file, in a fresh process."""
    figures = Path(engine_file).with_suffix(".json")
    subprocess.run([sys.executable, "-m", "tensorkiln.cli.main", "bench", str(engine_file), "--warmup",
                    str(args.warmup), "--iterations", str(args.runs), "--threads", str(args.threads), "--json",
                    str(figures)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(figures.read_text())["latency_ms"]["median"]


def _ort_options(threads: int, spin: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _time(runners: dict, warmup: int, runs: int) -> dict[str, float]:
    """Median milliseconds of each runner, run in alternation (one run of each per round)."""
    times = {key: [] for key in runners}
    for round_ in range(warmup + runs):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            if round_ >= warmup:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) * 1000 for key, values in times.items()}


if __name__ == "__main__":
    main()
