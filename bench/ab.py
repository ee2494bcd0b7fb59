"""A/B of build variants on one workload: engines that differ in tactic sources or passes, timed alternately.

    python bench/ab.py --workload mobilenet_v2:1 --variant default= --variant forward=+forward_residual_bias

Each `--variant LABEL=CHANGES` is an engine built with those changes to the defaults: tactic sources and passes,
each +NAME or -NAME (`kiln build --tactic-sources` and `--passes`), e.g. `-cublaslt,+forward_residual_bias`, and
~TEXT to leave out every tactic whose name holds TEXT (`~tma`: no TMA GEMM); empty: the defaults. Every variant is
built from one timing cache, so a tactic they share is timed once and chosen alike, and its output is checked
against PyTorch in FP32 before any timing counts. Then the variants run
in turns, ROUNDS times a median of RUNS runs each: a difference of a few percent, which the spread between
separate calls (about 8% on the H200) hides, shows in every round. CUDA target in FP16, timed with CUDA events;
`--device cpu` builds FP32 CPU engines and times them by the wall clock.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import sys
import tempfile
import time
import unittest.mock
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorkiln as tk  # noqa: E402
from tensorkiln.builder import BuilderConfig, Target  # noqa: E402
from tensorkiln.cli.build import parse_tactic_sources  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.passes.manager import pipeline_with  # noqa: E402
from tensorkiln.quant.precision import Precision  # noqa: E402
from tensorkiln.tactics import selection  # noqa: E402
from tensorkiln.tactics.selection import TACTIC_SOURCE_ALIASES, TACTIC_SOURCES, tactic_source  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peaks import median_cuda_ms, median_wall_ms  # noqa: E402
from gpu_peers import FP16_TOLERANCE, export_onnx, relative_error  # noqa: E402
from models import make_inputs, make_model, randomize_batchnorm  # noqa: E402


def split_changes(changes: str) -> tuple[str, str, list[str]]:
    """`-cublaslt,+forward_residual_bias,~tma` -> (tactic-source items, pass items, each comma-separated; tactic name
    parts to leave out)."""
    items = [item.strip() for item in changes.split(",") if item.strip()]
    left_out = [item[1:] for item in items if item.startswith("~")]
    items = [item for item in items if not item.startswith("~")]
    sources = set(TACTIC_SOURCES) | set(TACTIC_SOURCE_ALIASES)
    is_source = [item.lstrip("+-").lower() in sources for item in items]
    return (",".join(i for i, source in zip(items, is_source) if source),
            ",".join(i for i, source in zip(items, is_source) if not source), left_out)


def leaving_out(parts: list[str]):
    """A context in which the builder's candidates exclude tactics whose implementation name holds any of `parts`."""
    original = selection.layer_candidates

    def filtered(layer, target):
        found = original(layer, target)
        return [entry for entry in found if not any(part in entry.impl for part in parts)] or found

    return unittest.mock.patch.object(selection, "layer_candidates", filtered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", required=True, help="name:batch, e.g. mobilenet_v2:1")
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=CHANGES",
                        help="a build variant: a label and its changes, +/- tactic sources and passes (repeat; two "
                             "or more)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200, help="runs per round and variant (their median counts)")
    parser.add_argument("--opt-level", type=int, default=3)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--profile", action="store_true",
                        help="also time each variant's steps (kiln bench --dump-profile) into ab.json, and print the "
                             "slowest")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for ab.json")
    args = parser.parse_args()
    variants = dict(item.split("=", 1) for item in args.variant)
    if len(variants) < 2:
        parser.error("give two --variant LABEL=CHANGES or more")
    name, batch = args.workload.split(":")
    cuda = args.device == "cuda"
    torch.manual_seed(0)
    model = make_model(name).eval().to(args.device)
    randomize_batchnorm(model)
    inputs = make_inputs(name, int(batch), args.device)
    with torch.inference_mode():
        reference = model(*inputs.values()).float()
    folder = tempfile.mkdtemp()
    onnx_path = os.path.join(folder, "model.onnx")
    export_onnx(model, inputs, onnx_path)
    del model
    contexts, rows = {}, {}
    for label, changes in variants.items():
        sources, passes, left_out = split_changes(changes)
        config = BuilderConfig(target=Target(args.device), precision=Precision.FP16 if cuda else Precision.FP32,
                               timing_cache=os.path.join(folder, "timing.cache"), opt_level=args.opt_level,
                               disabled_tactic_sources=parse_tactic_sources(sources), passes=pipeline_with(passes))
        with leaving_out(left_out):
            engine = tk.Builder(config).build(parse_onnx(onnx_path))
        contexts[label] = engine.create_execution_context()
        error = relative_error(contexts[label].execute(dict(inputs))["output"], reference)
        sources_used = collections.Counter(tactic_source(step.tactic.split(".", 2)[2]) for step in engine.plan.steps)
        rows[label] = {"changes": changes, "error": error, "steps_by_source": dict(sources_used), "round_ms": []}
        if error > (FP16_TOLERANCE if cuda else 1e-3):
            raise SystemExit(f"variant {label}: output off by {error:.2e} against PyTorch FP32; nothing timed")
    timer = median_cuda_ms if cuda else median_wall_ms
    for _ in range(args.rounds):
        for label, context in contexts.items():
            run = (lambda c=context: c.execute_async(inputs)) if cuda else (lambda c=context: c.execute(inputs))
            rows[label]["round_ms"].append(timer(run, 10, args.runs))
    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"{args.workload} on {device}, {args.rounds} rounds of a {args.runs}-run median")
    print("| variant | changes | median ms | rounds min - max | steps by source | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, row in rows.items():
        row["median_ms"] = statistics.median(row["round_ms"])
        print(f"| {label} | {row['changes'] or 'defaults'} | {row['median_ms']:.4f} | {min(row['round_ms']):.4f} - "
              f"{max(row['round_ms']):.4f} | {row['steps_by_source']} | {row['error']:.1e} |")
    if args.profile:
        for label, context in contexts.items():
            steps = sorted(context.profile(inputs, runs=20), key=lambda step: -step[3])
            rows[label]["profile"] = [{"name": n, "kind": k, "tactic": t, "median_ms": s * 1e3} for n, k, t, s in steps]
            by_tactic = collections.defaultdict(list)
            for name, _, tactic, seconds in steps:  # the same layer in every block: its name without numbers
                by_tactic[tactic, re.sub(r"\d+", "#", name)].append(seconds * 1e3)
            print(f"\n{label}: steps {sum(s[3] for s in steps) * 1e3:.4f} ms in all; by tactic and layer:")
            for (tactic, layer), times in sorted(by_tactic.items(), key=lambda item: -sum(item[1]))[:16]:
                print(f"  {sum(times):8.4f} ms  {len(times):3d} steps  {tactic:44s} {layer}")
            print("  the slowest steps:")
            for name, kind, tactic, seconds in steps[:8]:
                print(f"  {seconds * 1e3:8.4f} ms  {tactic:44s} {name}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "ab.json").write_text(json.dumps({"workload": args.workload, "device": device, **rows}, indent=1))


if __name__ == "__main__":
    main()
