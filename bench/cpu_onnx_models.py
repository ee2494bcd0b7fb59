"""CPU latency of tensorkiln engines next to onnxruntime on the shared ONNX models, same machine, same inputs.

    python bench/cpu_onnx_models.py [--runs 100] [--threads N]

The two runtimes are timed in alternation (one run of each per round), so load from other processes hits
both alike; figures are medians after warm-up, on random inputs, after checking the outputs agree.
"""
from __future__ import annotations

import argparse
import os
import statistics
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
    parser.add_argument("--runs", type=int, default=100, help="timed rounds per model")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both runtimes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    print(f"| model | tensorkiln ms | onnxruntime ms | ratio (tk / ort) |\n| --- | --- | --- | --- |")
    for label, path, shapes in MODELS:
        model = SHARED / "models/onnx" / path
        feed = {k: np.random.default_rng(0).standard_normal(v).astype(np.float32) for k, v in shapes.items()}
        context = tk.Builder().build(parse_onnx(model, input_shapes=shapes)).create_execution_context()
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        ours, theirs = context.execute(feed), session.run(None, feed)
        for value, reference in zip(ours.values(), theirs):
            assert np.max(np.abs(value - reference)) <= 1e-4 * max(np.max(np.abs(reference)), 1e-6), label
        times = {"tk": [], "ort": []}
        for round_ in range(args.runs + 10):
            for key, run in (("tk", lambda: context.execute(feed)), ("ort", lambda: session.run(None, feed))):
                start = time.perf_counter()
                run()
                if round_ >= 10:
                    times[key].append(time.perf_counter() - start)
        tk_ms, ort_ms = (statistics.median(times[k]) * 1000 for k in ("tk", "ort"))
        print(f"| {label} | {tk_ms:.2f} | {ort_ms:.2f} | {tk_ms / ort_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
