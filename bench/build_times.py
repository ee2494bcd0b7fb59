"""Build times as a user counts them (issue 25): the whole `kiln build` process, wall clock, from the shell.

    python bench/build_times.py [--workload resnet50|bert_base] [--batch 1] [--device cuda|cpu] [--model M.onnx]
                                [--runs 1] [--out DIR]

Exports the workload (torchvision's ResNet-50 or bench/models.py's BERT-base encoder, random weights) to ONNX, or
takes `--model`, then times, each in a fresh process: `kiln --version`, `kiln --help`, a cold build (FP16 on CUDA;
empty timing cache and an empty Triton compile cache, as on a fresh machine), and a build that reads the timing cache
the first one wrote (Triton's cache warm, as it is on the user's machine by then); with --runs N the median of N
builds of each kind. Then one more timing-cache build under `python -X importtime`: the seconds spent importing, and
which of the heavy modules a build should not need (sympy, torch._dynamo, torch.distributed, ...) it imported, and
through what. Prints and writes JSON (build_times.json).
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

# modules that a build imports only through a slow path (the meta device, torch.broadcast_shapes, torch.compile)
HEAVY_MODULES = ("sympy", "torch._dynamo", "torch._inductor", "torch.fx.experimental.symbolic_shapes",
                 "torch.distributed.tensor", "torch.distributed.fsdp")


def timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stderr


def export(workload: str, batch: int, path: Path) -> None:
    """The workload as ONNX, exported in a child process (this one never imports torch: its import would not count)."""
    bench = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {bench!r}); from gpu_peers import export_onnx; "
            f"from models import make_inputs, make_model; m = make_model({workload!r}).eval(); "
            f"export_onnx(m, make_inputs({workload!r}, {batch}, 'cpu'), {str(path)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def import_report(stderr: str) -> dict:
    """Total import seconds of a `-X importtime` run, the heavy modules it imported and the top-level import that
    brought each in (the first module at nesting level 0 after it)."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            _, cumulative, name = line.split(":", 1)[1].split("|")
            rows.append((int(cumulative), (len(name) - len(name.lstrip())) // 2, name.strip()))
    heavy = {}
    for index, (cumulative, depth, name) in enumerate(rows):
        if name in HEAVY_MODULES:
            via = next((n for c, d, n in rows[index + 1:] if d == 0), name) if depth else name
            heavy[name] = {"seconds": round(cumulative / 1e6, 3), "via": via}
    return {"import_s": round(sum(c for c, d, _ in rows if d == 0) / 1e6, 2), "heavy_imports": heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="resnet50", choices=("resnet50", "bert_base"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--model", type=Path, help="an ONNX model to build instead of the workload")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--runs", type=int, default=1, help="builds of each kind (the median is reported)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="build-times-"))
    model = args.model or folder / f"{args.workload}.onnx"
    if args.model is None:
        export(args.workload, args.batch, model)
    kiln = [sys.executable, "-m", "tensorkiln.cli.main"]
    env = {**os.environ, "TRITON_CACHE_DIR": str(folder / "triton-cache")}
    results = {"workload": str(args.model) if args.model else f"{args.workload} b{args.batch}", "device": args.device}
    for name, flags in (("version_s", ["--version"]), ("help_s", ["--help"])):
        results[name] = round(min(timed(kiln + flags, env)[0] for _ in range(3)), 3)
    build = kiln + ["build", str(model), "-o", str(folder / "model.engine"), "--device", args.device,
                    "--timing-cache", str(folder / "timing.cache")]
    if args.device == "cuda":
        build.append("--fp16")
    cold, cached = [], []
    for _ in range(args.runs):
        for path in (folder / "timing.cache", folder / "triton-cache"):  # a fresh machine: both caches empty
            subprocess.run(["rm", "-rf", str(path)], check=True)
        cold.append(timed(build, env)[0])
        cached.append(timed(build, env)[0])
    results["cold_build_s"] = round(statistics.median(cold), 2)
    results["timing_cache_build_s"] = round(statistics.median(cached), 2)
    if args.runs > 1:
        results["cold_builds_s"] = [round(s, 2) for s in cold]
        results["timing_cache_builds_s"] = [round(s, 2) for s in cached]
    results.update(import_report(timed([sys.executable, "-X", "importtime"] + build[1:], env)[1]))
    print(json.dumps(results), flush=True)
    (args.out / "build_times.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
