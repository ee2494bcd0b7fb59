"""tensorkiln at a base commit, tensorkiln as checked out, and onnxruntime, each timed alone in a fresh process, in
alternation, on the cpu_suite models (issue 24).

    python bench/cpu_ab_commits.py --base COMMIT [--models NAME,...] [--rounds 3] [--runs 50] [--threads N]

On a shared machine the load changes from minute to minute (onnxruntime's MobileNetV2 took 3.2 ms in one suite run and
23 ms in another an hour later), so a figure from an earlier run says little about a change. This builds each model's
engine with both trees (the base in a temporary `git worktree`, removed at the end), then runs `--rounds` rounds of
(base, current, onnxruntime) through cpu_suite.py's own child timer (median of `--runs` runs after 10). It prints a
markdown row per model: the three medians over the rounds and the ratios current / base, base / ort, current / ort.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from cpu_suite import MODELS, SHARED  # noqa: E402

_BUILD = """
import sys
sys.path[:0] = [{root!r}, {bench!r}]
from pathlib import Path
from cpu_suite import build_engine, onnx_file
folder = Path({folder!r})
build_engine({name!r}, onnx_file({name!r}, folder), folder / {engine!r})
print(onnx_file({name!r}, folder))
"""


def build(root: Path, name: str, folder: Path, engine: str) -> str:
    """Build `name` with the tree at `root`; the ONNX file's path."""
    code = _BUILD.format(root=str(root), bench=str(root / "bench"), folder=str(folder), name=name, engine=engine)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env={**os.environ, "TENSORKILN_SHARED": str(SHARED.parents[1])})
    return done.stdout.strip().splitlines()[-1]


def time_child(root: Path, runtime: str, name: str, onnx: str, engine: Path, args) -> float:
    command = [sys.executable, str(root / "bench" / "cpu_suite.py"), "--child", runtime, "--model", name, "--onnx",
               onnx, "--engine", str(engine), "--runs", str(args.runs), "--warmup", "10", "--threads",
               str(args.threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["median_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (e.g. HEAD~5)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated cpu_suite model names")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (base, current, onnxruntime)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per process")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads of all three")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tensorkiln-ab-commits-") as workdir:
        folder, base = Path(workdir), Path(workdir) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            print("| model | base ms | current ms | onnxruntime ms | current / base | base / ort | current / ort |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for name in args.models.split(","):
                onnx = build(base, name, folder, f"base_{name}.engine")
                build(ROOT, name, folder, f"current_{name}.engine")
                runs = {"base": (base, "tk"), "current": (ROOT, "tk"), "ort": (ROOT, "ort")}
                samples: dict[str, list[float]] = {key: [] for key in runs}
                for _ in range(args.rounds):
                    for key, (root, runtime) in runs.items():
                        samples[key].append(time_child(root, runtime, name, onnx, folder / f"{key}_{name}.engine",
                                                       args))
                med = {key: statistics.median(values) for key, values in samples.items()}
                print(f"| {name} | {med['base']:.3f} | {med['current']:.3f} | {med['ort']:.3f} | "
                      f"{med['current'] / med['base']:.2f} | {med['base'] / med['ort']:.2f} | "
                      f"{med['current'] / med['ort']:.2f} |", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False,
                           capture_output=True)


if __name__ == "__main__":
    main()
