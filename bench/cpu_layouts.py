"""CPU latency of tensorkiln engines in both activation layouts (NCHW, NHWC) next to onnxruntime, on the shared
ONNX models that have convolutions.

    python bench/cpu_layouts.py [--runs 30] [--warmup 5] [--threads N] [--models NAME ...]

Each model is built once; the NCHW row runs the same plan with build_info["channels_last"] forced off (the NHWC
row as the builder makes it: it picks channels-last for networks with convolutions). The three runtimes are
timed in alternation (one run of each per round) so that load from other processes hits all alike, with
onnxruntime's spin-waiting off (it would slow down whatever runs after it); figures are medians after warm-up,
on the inputs stored with each model's reference, after checking the outputs agree.
It also prints each model's share of depthwise convolutions: whether NHWC pays off less where most of them are
depthwise is what decides if the layout rule in builder.py needs an exception (so far it does not).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.runtime.engine import Engine

SHARED = Path(os.environ.get("TENSORKILN_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
MODELS = {  # label: (model, reference with the inputs)
    "UltraFace slim-320": ("ultraface/version-slim-320.onnx", "ultraface/reference_version-slim-320.npz"),
    "UltraFace RFB-320": ("ultraface/version-RFB-320.onnx", "ultraface/reference_version-RFB-320.npz"),
    "CenterFace": ("centerface/centerface.onnx", "centerface/reference.npz"),
    "MTCNN P-Net": ("mtcnn_keras2onnx/pnet.onnx", "mtcnn_keras2onnx/reference_pnet.npz"),
    "MTCNN R-Net": ("mtcnn_keras2onnx/rnet.onnx", "mtcnn_keras2onnx/reference_rnet.npz"),
    "MTCNN O-Net": ("mtcnn_keras2onnx/onet.onnx", "mtcnn_keras2onnx/reference_onet.npz"),
    "PP-OCRv4 det": ("ppocrv4_det_cls/ch_PP-OCRv4_det_infer.onnx", "ppocrv4_det_cls/reference_det.npz"),
    "PP-OCR cls": ("ppocrv4_det_cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", "ppocrv4_det_cls/reference_cls.npz"),
}


def depthwise_share(network) -> tuple[int, int]:
    """(depthwise convolutions, convolutions) of a parsed network."""
    convs = [l for l in network.ir.layers if l.kind == "convolution"]
    depthwise = [l for l in convs if l.op.groups > 1 and l.op.groups == l.inputs[0].shape[1]]
    return len(depthwise), len(convs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed rounds per model (>= 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every runtime")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be at least 20")
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    # onnxruntime's pool threads spin for a while after each run: on a small machine whatever is timed next then
    # shares its cores with them (measured: +3.3 ms on MTCNN P-Net for the runtime after it, nothing for itself)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    print(f"{os.cpu_count()} CPUs ({args.threads} threads), torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"median of {args.runs} alternated rounds after {args.warmup} warm-up rounds")
    print("| model | depthwise / convs | NCHW ms | NHWC ms | onnxruntime ms | NHWC / NCHW | NHWC / ort |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for label in args.models:
        model, reference = (SHARED / "models/onnx" / p for p in MODELS[label])
        data = np.load(reference)
        feed = {k[len("input:"):]: data[k] for k in data.files if k.startswith("input:")}
        network = parse_onnx(model, input_shapes={k: v.shape for k, v in feed.items()})
        depthwise, convs = depthwise_share(network)
        engine = tk.Builder().build(network)
        layouts = {engine.plan.build_info["channels_last"]: engine}
        other = not engine.plan.build_info["channels_last"]
        layouts[other] = Engine(dataclasses.replace(engine.plan, build_info={**engine.plan.build_info,
                                                                            "channels_last": other}), engine.weights)
        contexts = {key: layouts[key].create_execution_context() for key in (False, True)}
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        runners = {"nchw": lambda: contexts[False].execute(feed), "nhwc": lambda: contexts[True].execute(feed),
                   "ort": lambda: session.run(None, feed)}
        reference_outputs = session.run(None, feed)
        for key in ("nchw", "nhwc"):
            for value, want in zip(runners[key]().values(), reference_outputs):
                assert np.max(np.abs(value - want)) <= 1e-4 * max(np.max(np.abs(want)), 1e-6), (label, key)
        times: dict[str, list[float]] = {key: [] for key in runners}
        for round_ in range(args.warmup + args.runs):
            for key, run in runners.items():
                start = time.perf_counter()
                run()
                if round_ >= args.warmup:
                    times[key].append(time.perf_counter() - start)
        ms = {key: statistics.median(values) * 1000 for key, values in times.items()}
        print(f"| {label} | {depthwise} / {convs} | {ms['nchw']:.2f} | {ms['nhwc']:.2f} | {ms['ort']:.2f} | "
              f"{ms['nhwc'] / ms['nchw']:.2f} | {ms['nhwc'] / ms['ort']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
