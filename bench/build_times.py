"""Build times as a user counts them (issue 25): the whole `kiln build` process, wall clock, from the shell.

    python bench/build_times.py [--workload resnet50] [--batch 1] [--out DIR]

Exports torchvision's ResNet-50 (random weights) to ONNX, then times, each in a fresh process:
`kiln --version`, `kiln --help`, a cold FP16 CUDA build (empty timing cache and an empty Triton compile cache, as on
a fresh machine), and a second build that reads the timing cache the first one wrote (Triton's cache warm, as it is
on the user's machine by then). Prints and writes JSON (build_times.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="build-times-"))
    model = folder / "resnet50.onnx"
    export = ("import torch, torchvision; m = torchvision.models.resnet50().eval(); "
              f"torch.onnx.export(m, (torch.randn({args.batch}, 3, 224, 224),), {str(model)!r}, "
              "input_names=['input'], output_names=['output'], opset_version=17, dynamo=False)")
    subprocess.run([sys.executable, "-c", export], check=True, capture_output=True)
    kiln = [sys.executable, "-m", "tensorkiln.cli.main"]
    env = {**os.environ, "TRITON_CACHE_DIR": str(folder / "triton-cache")}
    results = {"workload": f"resnet50 b{args.batch}", "device": args.device}
    for name, flags in (("version_s", ["--version"]), ("help_s", ["--help"])):
        results[name] = round(min(timed(kiln + flags, env)[0] for _ in range(3)), 3)
    build = kiln + ["build", str(model), "-o", str(folder / "resnet50.engine"), "--device", args.device,
                    "--timing-cache", str(folder / "timing.cache")]
    if args.device == "cuda":
        build.append("--fp16")
    results["cold_build_s"] = round(timed(build, env)[0], 2)
    results["timing_cache_build_s"] = round(timed(build, env)[0], 2)
    print(json.dumps(results), flush=True)
    (args.out / "build_times.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
