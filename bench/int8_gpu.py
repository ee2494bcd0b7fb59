"""INT8 engines on the GPU (issue 19): ResNet-50 and BERT-base INT8 against the FP16 engine and torch.compile, one
process.

    python bench/int8_gpu.py [--workloads resnet50:256,resnet50:1,bert_base:128] [--out DIR]
    python bench/int8_gpu.py --smoke        # tiny models on the CPU: the flow, not the figures

Per workload: the FP32 PyTorch model (random weights; ResNet-50's BatchNorm statistics randomized as bench/models.py
does; BERT from `transformers`, exported as a user exports it) gives the reference on random inputs. The INT8 engine
is calibrated on random inputs (ResNet-50: 512 images; the calibration alone is timed, from the first batch to the
cache write) and the b1 engine reuses that calibration cache. Every candidate's output is checked first (SQNR against
FP32: >= 20 dB for INT8, FP16 at bench/gpu_peers.py's 3e-2), then timed: median of CUDA-event timings of single
runs after warm-up, inputs bound in place. FP8 has no engine precision yet: its row says so. Each workload runs in
its own try/except; results.json and RESULTS.md go to --out after every row. The INT8 rows also record which
tactics the quantized layers chose (integer or float: the timer keeps the faster) and the slowest steps.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tensorkiln as tk  # noqa: E402
from tensorkiln.builder import BuilderConfig, Target  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.quant.calibrator import DataCalibrator  # noqa: E402
from tensorkiln.quant.int8 import Int8Options  # noqa: E402
from tensorkiln.quant.precision import Precision  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from gpu_peaks import median_ms  # noqa: E402
from models import randomize_batchnorm  # noqa: E402

WARMUP, RUNS = 20, 100
MIN_SQNR_DB = 20.0
FP16_TOLERANCE = 3e-2
CALIBRATION_IMAGES = 512
DEFAULT_WORKLOADS = "resnet50:256,resnet50:1,bert_base:128"
SMOKE_WORKLOADS = "tiny_cnn:4,tiny_cnn:1,tiny_bert:2"
INTEGER_MARK = "int8"  # tactic ids of the integer kernels: cublaslt_int8_*, triton_int8conv_*, triton_int8gemm_*


# ---- models and inputs --------------------------------------------------------------------------------------------
class TinyCNN(torch.nn.Module):
    """A stem, one bottleneck with a projection shortcut, pooling and a classifier (the smoke run's ResNet)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1),
                                    nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 32, 1), nn.BatchNorm2d(32))
        self.shortcut = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32))
        self.head = nn.Linear(32, 10)

    def forward(self, image):
        x = self.stem(image)
        x = torch.relu(self.branch(x) + self.shortcut(x))
        return self.head(x.mean((2, 3)))


class _LastHiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in ("bert_base", "tiny_bert"):
        import transformers

        tiny = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128)
        config = transformers.BertConfig(**(tiny if name == "tiny_bert" else {}), attn_implementation="sdpa")
        model = _LastHiddenState(transformers.BertModel(config)).eval()
        with torch.no_grad():  # transformers initializes biases to 0 and norms to 1: trained models have neither
            for parameter in model.parameters():
                parameter.add_(0.02 * torch.randn_like(parameter))
        return model
    if name == "tiny_cnn":
        model = TinyCNN().eval()
    else:
        import torchvision

        model = torchvision.models.resnet50().eval()
    randomize_batchnorm(model)
    return model


def sequence_length(name: str) -> int:
    return 16 if name == "tiny_bert" else 128


def make_inputs(name: str, batch: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random inputs (never zeros): images, or token ids with the second half of the batch padded by a quarter."""
    generator = torch.Generator().manual_seed(seed)
    if name.endswith("bert"):
        sequence = sequence_length(name)
        ids = torch.randint(0, 30522 if name == "bert_base" else 1000, (batch, sequence), generator=generator)
        mask = torch.ones(batch, sequence, dtype=torch.int64)
        mask[batch // 2:, sequence - sequence // 4:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    size = 32 if name == "tiny_cnn" else 224
    return {"image": torch.randn(batch, 3, size, size, generator=generator)}


def export_onnx(model, inputs: dict, path: str) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(inputs.values()), path, input_names=list(inputs), output_names=["output"],
                          opset_version=17, dynamo=False)


# ---- measuring ----------------------------------------------------------------------------------------------------
def sqnr_db(out: torch.Tensor, ref: torch.Tensor) -> float:
    """10 log10(|ref|^2 / |out - ref|^2), in FP64."""
    ref, noise = ref.double().cpu(), (out.double().cpu() - ref.double().cpu())
    return float(10 * math.log10(max(float(ref.pow(2).sum()), 1e-300) / max(float(noise.pow(2).sum()), 1e-300)))


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float().cpu() - ref.float().cpu()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


class TimedCalibrator(DataCalibrator):
    """DataCalibrator that times the calibration itself: from the first batch it hands out to the cache write."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = self.seconds = None

    def get_batch(self, specs):
        if self.started is None:
            self.started = time.perf_counter()
        return super().get_batch(specs)

    def write_calibration_cache(self, cache: str) -> None:
        if self.started is not None:
            self.seconds = time.perf_counter() - self.started
        super().write_calibration_cache(cache)


def calibration_data(name: str, count: int) -> list:
    """`count` random samples (an image each, or a sequence each as {input: array})."""
    batch = make_inputs(name, count, seed=7)
    if len(batch) == 1:
        return list(next(iter(batch.values())).numpy())
    return [{key: value[i].numpy() for key, value in batch.items()} for i in range(count)]


# ---- candidates ---------------------------------------------------------------------------------------------------
def build_engine(onnx_path: str, precision: Precision, args, calibrator=None):
    config = BuilderConfig(target=Target(args.device), precision=precision, opt_level=args.opt_level,
                           int8=Int8Options(calibrator) if calibrator is not None else None)
    start = time.perf_counter()
    builder = tk.Builder(config)
    engine = builder.build(parse_onnx(onnx_path))
    if args.device == "cuda":
        torch.cuda.synchronize()
    return engine, time.perf_counter() - start, builder.build_log


def time_engine(engine, inputs: dict, reference: torch.Tensor, args, result: dict, int8: bool) -> bool:
    """Check the engine's output (SQNR for INT8, relative error for FP16), then time it with the inputs bound."""
    context = engine.create_execution_context()
    output = context.execute(dict(inputs))["output"]
    result["sqnr_db"] = round(sqnr_db(output, reference), 2)
    result["error"] = relative_error(output, reference)
    passed = result["sqnr_db"] >= MIN_SQNR_DB if int8 else result["error"] <= args.tolerance
    if not passed:
        result["status"] = "MISMATCH"
        return False
    for input_name, value in inputs.items():
        context.set_input_tensor(input_name, value)
    result["latency_ms"] = median_ms(context.execute_async, args.device, args.warmup, args.runs)
    result["tactics"] = dict(collections.Counter(step.tactic for step in engine.plan.steps).most_common())
    quantized = [s for s in engine.plan.steps if getattr(s.op, "int8_input_scale", 0.0)]
    result["quantized_layers"] = len(quantized)
    result["integer_tactic_layers"] = sum(INTEGER_MARK in s.tactic for s in quantized)
    if args.device == "cuda":
        profile = context.profile(dict(inputs), runs=5)  # each step's GPU time inside a CUDA graph
        result["profile_top"] = [[step, tactic, round(seconds * 1e3, 4)] for step, _, tactic, seconds
                                 in sorted(profile, key=lambda r: -r[3])[:10]]
        result["profile_by_kind_ms"] = {kind: round(sum(r[3] for r in profile if r[1] == kind) * 1e3, 3)
                                        for kind in sorted({r[1] for r in profile})}
    return True


def bench_compile(model, inputs: dict, reference: torch.Tensor, args) -> dict:
    result: dict = {}
    if args.no_compile:
        return {"status": "skipped (--no-compile)"}
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    peer = model.to(dtype)
    if not any(v.dtype == torch.int64 for v in inputs.values()) and args.device == "cuda":
        peer = peer.to(memory_format=torch.channels_last)
    peer_inputs = [v.to(dtype) if v.is_floating_point() else v for v in inputs.values()]
    start = time.perf_counter()
    fast = torch.compile(peer, mode="reduce-overhead")
    with torch.inference_mode():
        output = fast(*peer_inputs)
        fast(*peer_inputs)  # reduce-overhead records its CUDA graph on a later call
        result["build_s"] = round(time.perf_counter() - start, 1)
        result["error"] = relative_error(output, reference)
        if result["error"] > args.tolerance:
            result["status"] = "MISMATCH"
            return result
        result["latency_ms"] = median_ms(lambda: fast(*peer_inputs), args.device, args.warmup, args.runs)
    return result


def _attempt(row: dict, key: str, fn) -> None:
    """row[key] = fn(), or the failure with its traceback: one candidate's failure must not hide the others."""
    try:
        row[key] = fn()
    except Exception as error:  # noqa: BLE001
        row[key] = {"status": f"FAILED {type(error).__name__}: {str(error)[:200]}",
                    "traceback": traceback.format_exc()[-2000:]}


def run_workload(item: str, args, rows: list, caches: dict) -> None:
    name, batch = item.split(":")
    batch = int(batch)
    model = make_model(name).to(args.device)
    inputs = {key: value.to(args.device) for key, value in make_inputs(name, batch).items()}
    with torch.inference_mode():
        reference = model(*inputs.values()).float()
    row: dict = {"workload": f"{name} b{batch}", "batch": batch}
    folder = tempfile.mkdtemp(prefix="int8_gpu_")
    onnx_path = os.path.join(folder, f"{name}_b{batch}.onnx")
    export_onnx(model.cpu(), {k: v.cpu() for k, v in inputs.items()}, onnx_path)
    model.to(args.device)

    def fp16():
        result: dict = {}
        engine, result["build_s"], _ = build_engine(onnx_path, Precision.FP16, args)
        time_engine(engine, inputs, reference, args, result, int8=False)
        return result

    def int8():
        result: dict = {}
        cache = caches.setdefault(name, os.path.join(folder, f"{name}.calib"))  # b1 reuses the first build's cache
        count = args.calib_images if not name.endswith("bert") else args.calib_sequences
        calibrator = TimedCalibrator(calibration_data(name, count), "entropy", cache_path=cache)
        engine, result["build_s"], log = build_engine(onnx_path, Precision.INT8, args, calibrator)
        result["build_log_int8"] = [line for line in log if line.startswith("int8:")]  # the links made
        result["calibration_s"] = None if calibrator.seconds is None else round(calibrator.seconds, 2)
        result["calibration_samples"] = 0 if calibrator.seconds is None else count
        time_engine(engine, inputs, reference, args, result, int8=True)
        return result

    if args.device == "cuda":
        _attempt(row, "fp16", fp16)
    _attempt(row, "int8", int8)
    row["fp8"] = {"status": "not built: tensorkiln has no FP8 engine precision yet (FP8 Q/DQ models run as written)"}
    if args.device == "cuda":
        _attempt(row, "compile", lambda: bench_compile(model, inputs, reference, args))
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    write_results(rows, args.out)
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()


def throughput(result: dict, batch: int) -> str:
    ms = result.get("latency_ms")
    return "-" if ms is None else f"{batch / ms * 1e3:,.0f}"


def format_table(rows: list) -> str:
    lines = ["| workload | INT8 ms | INT8 items/s | FP16 ms | FP16 items/s | compile ms | INT8 vs FP16 | INT8 vs "
             "compile | INT8 SQNR dB | int8 tactics / quantized | calib s | INT8 build s |", "|" + " --- |" * 12]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['workload']} | failed: {row['failed'][:100]} |" + " |" * 10)
            continue
        int8, fp16, compiled = row.get("int8", {}), row.get("fp16", {}), row.get("compile", {})
        ms = int8.get("latency_ms")
        ratio = lambda peer: "-" if ms is None or peer is None else f"{peer / ms:.2f}x"  # noqa: E731
        status = int8.get("status", "")[:60]
        lines.append(f"| {row['workload']} | {fmt(ms) if ms else status} | {throughput(int8, row['batch'])} | "
                     f"{fmt(fp16.get('latency_ms'))} | {throughput(fp16, row['batch'])} | "
                     f"{fmt(compiled.get('latency_ms'))} | {ratio(fp16.get('latency_ms'))} | "
                     f"{ratio(compiled.get('latency_ms'))} | {int8.get('sqnr_db', '-')} | "
                     f"{int8.get('integer_tactic_layers', '-')} / {int8.get('quantized_layers', '-')} | "
                     f"{int8.get('calibration_s', '-')} | {fmt(int8.get('build_s'))} |")
    return "\n".join(lines) + "\n"


def write_results(rows: list, out: str) -> str:
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "results.json").write_text(json.dumps(rows, indent=1, default=str))
    table = format_table(rows)
    Path(out, "RESULTS.md").write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=None, help=f"comma-separated name:batch (default {DEFAULT_WORKLOADS})")
    parser.add_argument("--smoke", action="store_true", help=f"tiny models on the CPU ({SMOKE_WORKLOADS})")
    parser.add_argument("--opt-level", type=int, default=2, help="tensorkiln tactic timing effort (0..5)")
    parser.add_argument("--calib-images", type=int, default=CALIBRATION_IMAGES)
    parser.add_argument("--calib-sequences", type=int, default=256, help="BERT calibration samples")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for results.json and RESULTS.md")
    args = parser.parse_args()
    args.device = "cpu" if args.smoke else "cuda"
    args.tolerance = FP16_TOLERANCE if args.device == "cuda" else 1e-4
    if args.smoke:
        args.no_compile, args.calib_images, args.calib_sequences, args.warmup, args.runs = True, 16, 8, 2, 5
    workloads = args.workloads or (SMOKE_WORKLOADS if args.smoke else DEFAULT_WORKLOADS)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {device}, torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    caches: dict[str, str] = {}
    for item in workloads.split(","):
        try:
            run_workload(item, args, rows, caches)
        except Exception as error:  # noqa: BLE001 (one failing workload must not hide the others' figures)
            print(f"{item}: FAILED {type(error).__name__}: {error}", flush=True)
            rows.append({"workload": item, "failed": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc()[-2000:]})
            write_results(rows, args.out)
    print(write_results(rows, args.out))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
