"""Dynamic shapes (issue 20): one engine with an optimization profile against fixed-shape engines, same run.

    python bench/dynamic_shapes.py [--out DIR] [--smoke]

ResNet-50 (torchvision, batch 1..256, opt 64) and Hugging Face BERT-base (batch 1..128 x sequence 16..512, opt
64x128), exported by torch.onnx.export (TorchScript exporter) with dynamic axes, built FP16 for CUDA. For each
measured shape: the profiled engine and a fixed-shape engine built for exactly that shape, outputs checked against
FP32 PyTorch first, then the median of CUDA-event timings after warm-up, random inputs. Also: the host time of
switching to a shape met before, and the first run of a new shape (its specialization). `--smoke`: tiny models on
the CPU, to try the harness without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tensorkiln.builder import Builder, BuilderConfig, Target  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.plan.profiles import profiles_from_shape_specs  # noqa: E402
from tensorkiln.profile_builder import ModelSource, build_with_profiles  # noqa: E402
from tensorkiln.quant.precision import Precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peaks import median_ms  # noqa: E402
from models import randomize_batchnorm  # noqa: E402

TOLERANCE = {"cuda": 3e-2, "cpu": 1e-4}  # max |out - ref| / max |ref| against FP32 PyTorch


class Workload(NamedTuple):
    name: str
    model: torch.nn.Module
    dynamic_axes: dict
    input_names: list
    bounds: list  # [min, opt, max] shapes by input name
    measured: list  # the keys make_inputs takes, one per measured shape
    make_inputs: Callable
    new_shape: object  # a key of a shape not met before (its first run specializes the engine)


def resnet50(smoke: bool) -> Workload:
    import torchvision

    model = torchvision.models.resnet18() if smoke else torchvision.models.resnet50()
    randomize_batchnorm(model)
    batches = (1, 2, 4) if smoke else (1, 64, 256)
    measured = (1, 3, 4) if smoke else (1, 32, 256)

    def inputs(batch, generator):
        return {"image": torch.randn(batch, 3, size, size, generator=generator)}
    size = 32 if smoke else 224
    return Workload("resnet50" if not smoke else "resnet18-smoke", model, {"image": {0: "batch"}}, ["image"],
                    [{"image": (b, 3, size, size)} for b in batches], list(measured), inputs, 48 if not smoke else 5)


def bert(smoke: bool) -> Workload:
    from transformers import BertConfig, BertModel

    config = (BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
              if smoke else BertConfig())
    config._attn_implementation = "sdpa"
    model = BertModel(config, add_pooling_layer=False)
    shapes = [(1, 16), (2, 32), (4, 64)] if smoke else [(1, 16), (64, 128), (128, 512)]
    measured = [(4, 32), (1, 16), (3, 50)] if smoke else [(128, 128), (1, 16), (7, 300), (128, 512)]

    def inputs(shape, generator):
        batch, length = shape
        ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.int64)
        mask[:, length - length // 4:] = 0  # a padded tail, so the mask matters
        return {"input_ids": ids, "attention_mask": mask}
    names = ["input_ids", "attention_mask"]
    return Workload("bert-base" if not smoke else "bert-smoke", model, {n: {0: "batch", 1: "sequence"} for n in names},
                    names, [{n: s for n in names} for s in shapes], measured, inputs,
                    (48, 200) if not smoke else (3, 40))


class Output(torch.nn.Module):
    """The first output only (BERT's last hidden state), so every runtime returns one tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        out = self.model(*args)
        return out[0] if isinstance(out, (tuple, list)) or hasattr(out, "last_hidden_state") else out


def run_workload(workload: Workload, device: str, folder: str, rows: list, out: Path | None) -> None:
    name, names, make_inputs = workload.name, workload.input_names, workload.make_inputs
    axes, (low, opt, high), measured, new_shape = (workload.dynamic_axes, workload.bounds, workload.measured,
                                                   workload.new_shape)
    model = Output(workload.model).eval()  # the wrapper too: export restores its mode onto every submodule
    generator = torch.Generator().manual_seed(0)
    example = make_inputs(measured[0], generator)
    path = os.path.join(folder, f"{name}.onnx")
    torch.onnx.export(model, tuple(example[n] for n in names), path, input_names=names, output_names=["output"],
                      opset_version=17, dynamo=False, dynamic_axes={**axes, "output": {0: "batch"}})
    precision = Precision.FP16 if device == "cuda" else Precision.FP32
    cache = os.path.join(folder, f"{name}.timing")
    config = BuilderConfig(target=Target(device), precision=precision, timing_cache=cache)
    [profile] = profiles_from_shape_specs([low], [opt], [high])
    start = time.perf_counter()
    profiled = build_with_profiles(ModelSource.from_onnx(path), [profile], config)
    build_s = time.perf_counter() - start
    context = profiled.create_execution_context()
    reference_model = model.to(device).float()
    for key in measured:
        feed = make_inputs(key, generator)
        feed = {n: v.to(device) for n, v in feed.items()}
        with torch.inference_mode():
            reference = reference_model(*(feed[n] for n in names)).float()
        start = time.perf_counter()
        first = context.execute(feed)["output"]  # specializes the shape where it was not built ahead
        first_run_ms = (time.perf_counter() - start) * 1e3
        row = {"model": name, "shape": {n: list(v.shape) for n, v in feed.items()}, "device": device,
               "profile_build_s": round(build_s, 2), "first_run_ms": round(first_run_ms, 2)}
        row["error"] = float((first.float() - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
        shapes = {n: tuple(v.shape) for n, v in feed.items()}
        start = time.perf_counter()
        fixed = Builder(config).build(parse_onnx(path, input_shapes=shapes))
        row["fixed_build_s"] = round(time.perf_counter() - start, 2)
        fixed_context = fixed.create_execution_context()
        fixed_error = float((fixed_context.execute(feed)["output"].float() - reference).abs().max()
                            / reference.abs().max().clamp_min(1e-12))
        row["fixed_error"] = fixed_error
        if max(row["error"], fixed_error) > TOLERANCE[device]:
            row["status"] = "MISMATCH"
        else:
            # execute_async: inputs already on the device, as a server holds them
            row["profiled_ms"] = median_ms(_runner(context, feed, device), device, 10, 50)
            row["fixed_ms"] = median_ms(_runner(fixed_context, feed, device), device, 10, 50)
            row["ratio_profiled_to_fixed"] = round(row["profiled_ms"] / row["fixed_ms"], 3)
            row["status"] = "ok"
        rows.append(row)
        print(json.dumps(row), flush=True)
        _write(rows, out)
        del fixed, fixed_context
        if device == "cuda":
            torch.cuda.empty_cache()
    # switching to shapes met before: host time of choosing the context (the rest is the fixed engine's own run)
    keys = [{n: tuple(v) for n, v in r["shape"].items()} for r in rows if r["model"] == name]
    for key in keys:
        context.context_for(key)
    start = time.perf_counter()
    for _ in range(1000):
        for key in keys:
            context.context_for(key)
    switch_us = (time.perf_counter() - start) / (1000 * len(keys)) * 1e6
    new_feed = {n: v.to(device) for n, v in make_inputs(new_shape, generator).items()}
    start = time.perf_counter()
    context.execute(new_feed)
    new_shape_ms = (time.perf_counter() - start) * 1e3
    rows.append({"model": name, "switch_host_us": round(switch_us, 2), "new_shape": list(new_feed[names[0]].shape),
                 "new_shape_first_run_ms": round(new_shape_ms, 1),
                 "specialization_s": [round(s, 3) for s in profiled.specialization_seconds]})
    print(json.dumps(rows[-1]), flush=True)
    _write(rows, out)


def _runner(context, feed, device: str):
    """One execution: enqueued on CUDA (inputs already on the device, as a server holds them), waited for on the CPU."""
    return (lambda: context.execute_async(feed)) if device == "cuda" else (lambda: context.execute(feed))


def _write(rows, out: Path | None) -> None:
    if out is not None:
        (out / "dynamic_shapes.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--models", default="resnet50,bert")
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rows: list = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            try:
                run_workload({"resnet50": resnet50, "bert": bert}[name](args.smoke), device, folder, rows, args.out)
            except Exception as error:  # noqa: BLE001 - one workload's failure must not lose the others' figures
                import traceback

                rows.append({"model": name, "status": f"FAILED: {type(error).__name__}: {error}"[:500],
                             "traceback": traceback.format_exc()[-3000:]})
                print(json.dumps(rows[-1]), flush=True)
                _write(rows, args.out)


if __name__ == "__main__":
    main()
