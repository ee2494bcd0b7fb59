"""Hugging Face transformers as a user runs them: tensorkiln against PyTorch eager FP16 and torch.compile, one process.

    python bench/hf_transformers.py [--models bert_base:128,bert_base:1,distilbert:64,gpt2:1,vit_b16:64] [--out DIR]
    python bench/hf_transformers.py --smoke          # tiny configurations on the CPU: the flow, not the figures
    python bench/hf_transformers.py --models bert_base:1 --ab=-fuse_matmul_layer_norm   # A/B of pass changes

Per model: `transformers` builds it with random weights and sdpa attention (a padding mask where the model takes
one), the FP32 PyTorch output is the reference; the model is exported to ONNX opset 17 with the TorchScript
exporter, and the engine is built with the CLI (`kiln build --device cuda --fp16`, in a subprocess, as a user
would). Each candidate (tensorkiln, eager FP16, torch.compile(mode="reduce-overhead") of the FP16 model) is checked
against the reference first, then timed: median of CUDA-event timings of single calls after warm-up, random inputs.
Every model runs in its own try/except, and the results (JSON, and the markdown table) are written after each one.
The engine's attention steps and their tactics are recorded too (the recognised attention must reach the Triton
flash kernel, `triton_flash_*`).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tensorkiln as tk  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from gpu_peaks import median_ms  # noqa: E402

WARMUP, RUNS = 20, 100
AB_ROUNDS = 5  # alternating rounds of --ab
FP16_TOLERANCE = 3e-2  # max |out - ref| / max |ref| against the FP32 PyTorch model (bench/gpu_peers.py's bar)
FP32_TOLERANCE = 1e-4  # the CPU smoke run builds FP32 engines
SEQUENCE = 128
DEFAULT_MODELS = "bert_base:128,bert_base:1,distilbert:64,gpt2:1,vit_b16:64"
SMOKE_MODELS = "bert_base:2,distilbert:2,gpt2:1,vit_b16:2"


# ---- models -------------------------------------------------------------------------------------------------------
def _config(name: str, smoke: bool):
    import transformers

    tiny = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    sdpa = dict(attn_implementation="sdpa")
    if name == "bert_base":
        return transformers.BertModel, transformers.BertConfig(**(tiny if smoke else {}), **sdpa)
    if name == "distilbert":
        small = dict(n_layers=2, dim=64, n_heads=4, hidden_dim=128)
        return transformers.DistilBertModel, transformers.DistilBertConfig(**(small if smoke else {}), **sdpa)
    if name == "gpt2":
        small = dict(n_layer=2, n_embd=64, n_head=4)
        return transformers.GPT2LMHeadModel, transformers.GPT2Config(**(small if smoke else {}), **sdpa)
    if name == "vit_b16":
        small = dict(tiny, image_size=32, patch_size=8)
        return transformers.ViTModel, transformers.ViTConfig(**(small if smoke else {}), **sdpa)
    raise SystemExit(f"unknown model {name!r}; the models are bert_base, distilbert, gpt2, vit_b16")


class _Output(torch.nn.Module):
    """One tensor out: the LM head's logits for GPT-2 (one forward pass over the prompt, no KV cache), the last
    hidden state otherwise."""

    def __init__(self, model, decoder: bool):
        super().__init__()
        self.model, self.decoder = model, decoder

    def forward(self, *inputs):
        if len(inputs) == 1:  # ViT: pixel_values
            return self.model(pixel_values=inputs[0]).last_hidden_state
        if self.decoder:
            return self.model(input_ids=inputs[0], attention_mask=inputs[1], use_cache=False).logits
        return self.model(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state


def make_model(name: str, smoke: bool, device: str):
    """The model (FP32, random weights, one output) and its configuration."""
    cls, config = _config(name, smoke)
    torch.manual_seed(0)
    model = _Output(cls(config), decoder=name == "gpt2").eval()
    with torch.no_grad():  # transformers initializes biases to 0 and norms to 1: trained models have neither
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model.to(device), config


def make_inputs(name: str, config, batch: int, smoke: bool, device: str) -> dict[str, torch.Tensor]:
    """Random inputs: an image batch, or token ids with a padding mask."""
    generator = torch.Generator().manual_seed(1)
    if name == "vit_b16":
        size = config.image_size
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator).to(device)}
    sequence = 16 if smoke else SEQUENCE
    ids = torch.randint(0, config.vocab_size, (batch, sequence), generator=generator)
    mask = torch.ones(batch, sequence, dtype=torch.int64)
    mask[batch // 2:, sequence - sequence // 4:] = 0  # the second half of the batch padded by a quarter
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


# ---- timing and checks --------------------------------------------------------------------------------------------
def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def _checked(result: dict, error: float, tolerance: float) -> bool:
    result["error"] = error
    if error > tolerance:
        result["status"] = f"MISMATCH (error {error:.2e} > {tolerance:.0e})"
        return False
    return True


# ---- candidates ---------------------------------------------------------------------------------------------------
def bench_tensorkiln(model, inputs, reference, folder: str, args) -> dict:
    onnx_path, engine_path = os.path.join(folder, "model.onnx"), os.path.join(folder, "model.engine")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        torch.onnx.export(model, tuple(inputs.values()), onnx_path, input_names=list(inputs),
                          output_names=["output"], opset_version=17, dynamo=False)
    result: dict = {"export_s": time.perf_counter() - start}
    engine = _build(onnx_path, engine_path, args.passes, args, result)
    if engine is None:
        return result
    kinds = collections.Counter(step.kind for step in engine.plan.steps)
    result["steps"] = len(engine.plan.steps)
    result["attention_steps"], result["softmax_steps"] = kinds["attention"], kinds["softmax"]
    result["attention_tactics"] = dict(collections.Counter(s.tactic for s in engine.plan.steps
                                                           if s.kind == "attention"))
    result["kinds"] = dict(kinds.most_common())
    result["steps_per_layer"] = steps_per_layer(engine.plan.steps)
    result["fused_norm_tactics"] = dict(collections.Counter(s.tactic for s in engine.plan.steps
                                                            if s.kind == "fused_matmul_layer_norm"))
    context = engine.create_execution_context()
    output = context.execute(dict(inputs))["output"]
    if not _checked(result, relative_error(output, reference), args.tolerance):
        return result
    result["latency_ms"] = median_ms(lambda: context.execute_async(inputs), args.device, args.warmup, args.runs)
    profile = context.profile(dict(inputs), runs=5)  # (name, kind, tactic, seconds) per step: where the time goes
    result["profile_by_kind_ms"] = {kind: round(sum(r[3] for r in profile if r[1] == kind) * 1e3, 4)
                                    for kind in sorted({r[1] for r in profile})}
    result["profile_top"] = [[name, tactic, round(seconds * 1e3, 4)]
                             for name, _, tactic, seconds in sorted(profile, key=lambda r: -r[3])[:10]]
    if args.ab is not None:
        result["ab"] = _ab(context, onnx_path, os.path.join(folder, "variant.engine"), inputs, reference, args)
    return result


def _build(onnx_path: str, engine_path: str, passes: str, args, result: dict):
    """The engine `kiln build` makes in a subprocess, as a user would (None, with the status in `result`, where the
    build fails)."""
    command = [sys.executable, "-c", "from tensorkiln.cli.main import main; main()", "build", onnx_path, "-o",
               engine_path, "--device", args.device] + (["--fp16"] if args.device == "cuda" else []) + \
        ([f"--passes={passes}"] if passes else [])
    start = time.perf_counter()
    built = subprocess.run(command, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
                               "PYTHONPATH")]))})
    result["build_s"] = time.perf_counter() - start
    if built.returncode:
        result["status"] = f"BUILD FAILED: {(built.stderr or built.stdout).strip().splitlines()[-1:]}"
        return None
    return tk.Runtime().load(engine_path)


def _ab(context, onnx_path: str, engine_path: str, inputs, reference, args) -> dict:
    """The engine with `--ab` pass changes against the default one, timed in alternating rounds (a median of
    args.runs calls each): differences of a few percent, which the spread between separate runs hides."""
    row: dict = {"changes": args.ab}
    engine = _build(onnx_path, engine_path, args.ab, args, row)
    if engine is None:
        return row
    row["steps"] = len(engine.plan.steps)
    row["steps_per_layer"] = steps_per_layer(engine.plan.steps)
    variant = engine.create_execution_context()
    if not _checked(row, relative_error(variant.execute(dict(inputs))["output"], reference), args.tolerance):
        return row
    rounds: dict = {"default": [], "variant": []}
    for _ in range(AB_ROUNDS):
        for label, candidate in (("default", context), ("variant", variant)):
            rounds[label].append(median_ms(lambda c=candidate: c.execute_async(inputs), args.device, args.warmup,
                                           args.runs))
    row["round_ms"] = rounds
    row["median_ms"] = {label: statistics.median(values) for label, values in rounds.items()}
    return row


# steps that launch no kernel on the GPU: views (reshapes, transposes the attention kernel reads in place, splits)
_VIEW_KINDS = {"shuffle", "split"}


def steps_per_layer(steps) -> dict:
    """The steps of one encoder/decoder layer (the second: the first also computes what layers share, the padding
    mask), by kind, and how many of them launch kernels: where the launch-bound batch-1 time goes."""
    marks = ("layer.1/", "h.1/")  # BERT, DistilBERT and ViT name their layers layer.N; GPT-2 h.N
    kinds = collections.Counter(s.kind for s in steps if any(mark in s.name for mark in marks))
    return {"kinds": dict(kinds.most_common()),
            "kernels": sum(n for kind, n in kinds.items() if kind not in _VIEW_KINDS)}


def bench_eager_and_compile(model, inputs, reference, args) -> tuple[dict, dict]:
    """PyTorch in FP16 on the GPU (FP32 on the CPU), eager and torch.compile(mode="reduce-overhead")."""
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    peer = model.to(dtype)
    peer_inputs = [v.to(dtype) if v.is_floating_point() else v for v in inputs.values()]
    eager: dict = {}
    with torch.inference_mode():
        if _checked(eager, relative_error(peer(*peer_inputs), reference), args.tolerance):
            eager["latency_ms"] = median_ms(lambda: peer(*peer_inputs), args.device, args.warmup, args.runs)
    compiled: dict = {}
    if args.no_compile:
        compiled["status"] = "skipped (--no-compile)"
        return eager, compiled
    start = time.perf_counter()
    fast = torch.compile(peer, mode="reduce-overhead")
    with torch.inference_mode():
        fast(*peer_inputs)  # compiles; reduce-overhead records its CUDA graph on a later call
        output = fast(*peer_inputs).clone()  # the graph's output buffer is overwritten by the next replay
        compiled["build_s"] = time.perf_counter() - start
        if _checked(compiled, relative_error(output, reference), args.tolerance):
            compiled["latency_ms"] = median_ms(lambda: fast(*peer_inputs), args.device, args.warmup, args.runs)
    return eager, compiled


def run_model(item: str, args, rows: list) -> None:
    name, batch = item.split(":")
    batch = int(batch)
    model, config = make_model(name, args.smoke, args.device)
    inputs = make_inputs(name, config, batch, args.smoke, args.device)
    row: dict = {"workload": f"{name} b{batch}" + (f" s{inputs['input_ids'].shape[1]}" if "input_ids" in inputs
                                                   else ""), "batch": batch}
    with torch.inference_mode():
        reference = model(*inputs.values()).float()
    with tempfile.TemporaryDirectory() as folder:
        row["tensorkiln"] = bench_tensorkiln(model, inputs, reference, folder, args)
    row["eager"], row["compile"] = bench_eager_and_compile(model, inputs, reference, args)
    rows.append(row)
    print(json.dumps(row), flush=True)


# ---- results ------------------------------------------------------------------------------------------------------
def format_table(rows: list) -> str:
    lines = ["| model | tensorkiln | eager FP16 | torch.compile (reduce-overhead) | tensorkiln vs best | attention "
             "steps (tactic) | build s | error tk |", "|" + " --- |" * 8]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['workload']} | failed: {row['failed'][:100]} |" + " |" * 6)
            continue
        tk_row = row["tensorkiln"]
        cells = []
        for candidate in (tk_row, row["eager"], row["compile"]):
            ms = candidate.get("latency_ms")
            cells.append(f"{ms:.3f} ms" if ms is not None else candidate.get("status", "-"))
        if tk_row.get("latency_ms") is not None:
            items = row["batch"] / tk_row["latency_ms"] * 1e3
            cells[0] += f" ({items:,.0f}/s)"
        peers = [c["latency_ms"] for c in (row["eager"], row["compile"]) if c.get("latency_ms") is not None]
        ratio = f"{min(peers) / tk_row['latency_ms']:.2f}x" if peers and tk_row.get("latency_ms") else "-"
        tactics = ", ".join(f"{n} {t}" for t, n in tk_row.get("attention_tactics", {}).items()) or "none"
        error = f"{tk_row['error']:.1e}" if "error" in tk_row else "-"
        lines.append(f"| {row['workload']} | {' | '.join(cells)} | {ratio} | {tk_row.get('attention_steps', 0)} "
                     f"({tactics}) | {tk_row.get('build_s', 0):.1f} | {error} |")
    for row in rows:  # --ab: the alternating rounds' medians
        ab = row.get("tensorkiln", {}).get("ab", {})
        if "median_ms" in ab:
            medians = ab["median_ms"]
            lines.append(f"\nA/B {row['workload']}: default {medians['default']:.3f} ms, {ab['changes']} "
                         f"{medians['variant']:.3f} ms (medians of {AB_ROUNDS} alternating rounds)")
    return "\n".join(lines)


def write_results(rows: list, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "hf_transformers.json").write_text(json.dumps(rows, indent=1))
    table = format_table(rows)
    (out / "hf_transformers.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help=f"comma-separated name:batch (default {DEFAULT_MODELS})")
    parser.add_argument("--smoke", action="store_true", help="tiny configurations on the CPU (FP32): the flow only")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--passes", default="", help="passed to kiln build: +PASS/-PASS changes to the default "
                        "pipeline, e.g. -fuse_matmul_layer_norm")
    parser.add_argument("--ab", default=None, metavar="CHANGES", help="also build an engine with these pass changes "
                        "(as --passes) and time it against the first in alternating rounds, e.g. --ab="
                        "-fuse_matmul_layer_norm,-fuse_add_layer_norm")
    parser.add_argument("--runs", type=int, default=None, help=f"timed calls per candidate (default {RUNS})")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for hf_transformers.{json,md}")
    args = parser.parse_args()
    args.device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    args.tolerance = FP16_TOLERANCE if args.device == "cuda" else FP32_TOLERANCE
    args.warmup, args.runs = (WARMUP, args.runs or RUNS) if not args.smoke else (2, args.runs or 5)
    models = args.models or (SMOKE_MODELS if args.smoke else DEFAULT_MODELS)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {device_name}, torch {torch.__version__}", flush=True)
    rows: list = []
    for item in models.split(","):
        started = time.perf_counter()
        try:
            run_model(item, args, rows)
        except Exception as error:  # one failing model must not lose the others' figures
            print(f"{item}: FAILED {type(error).__name__}: {error}", flush=True)
            rows.append({"workload": item, "failed": f"{type(error).__name__}: {error}"})
        print(f"{item}: {time.perf_counter() - started:.1f} s", flush=True)
        write_results(rows, Path(args.out))
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print(write_results(rows, Path(args.out)))


if __name__ == "__main__":
    main()
