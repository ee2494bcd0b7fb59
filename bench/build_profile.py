"""Where an engine build's time goes: one FP16 CUDA build of a workload from an empty timing cache, with Triton's
compile cache empty too (as on a fresh machine) unless --warm-triton. Prints the build time and the builder's log
(its last lines say how long tactic timing took per kernel family), and with --cprofile the functions with the most
cumulative time (cProfile slows the build down).

    python bench/build_profile.py --workload resnet50:256 [--opt-level 3] [--cprofile] [--out DIR]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--workload", default="resnet50:256", help="name:batch, as in gpu_peers.py")
parser.add_argument("--opt-level", type=int, default=3)
parser.add_argument("--warm-triton", action="store_true", help="keep Triton's own compile cache")
parser.add_argument("--cprofile", action="store_true", help="profile the build's Python functions")
parser.add_argument("--top", type=int, default=40, help="functions to print with --cprofile")
parser.add_argument("--out", default=os.environ.get("OUT", "."))
args = parser.parse_args()
if not args.warm_triton:  # before triton is imported: it reads the variable once
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-cache-")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorkiln as tk  # noqa: E402
from tensorkiln.builder import BuilderConfig, Target  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.quant.precision import Precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peers import export_onnx  # noqa: E402
from models import make_inputs, make_model  # noqa: E402


def main() -> None:
    name, batch = args.workload.split(":")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = os.path.join(folder, f"{name}.onnx")
        export_onnx(make_model(name).eval(), make_inputs(name, int(batch), "cpu"), onnx_path)
        config = BuilderConfig(target=Target.CUDA, precision=Precision.FP16, opt_level=args.opt_level,
                               timing_cache=Path(folder, "timing.cache"))
        torch.cuda.init()
        builder = tk.Builder(config)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        if args.cprofile:
            profiler.enable()
        builder.build(parse_onnx(onnx_path))
        profiler.disable()
        seconds = time.perf_counter() - start
    report = io.StringIO()
    if args.cprofile:
        pstats.Stats(profiler, stream=report).sort_stats("cumulative").print_stats(args.top)
    text = (f"{torch.cuda.get_device_name()}: {args.workload} FP16 build, opt level {args.opt_level}, Triton cache "
            f"{'warm' if args.warm_triton else 'empty'}: {seconds:.1f} s (parse included)\n\n"
            + "\n".join(builder.build_log[-7:]) + "\n\n" + report.getvalue())
    print(text)
    Path(out, f"build_profile_{name}_{batch}.txt").write_text(text)


if __name__ == "__main__":
    main()
