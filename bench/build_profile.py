"""Where an engine build's time goes: one FP16 CUDA build of a workload from an empty timing cache, with Triton's
compile cache empty too (as on a fresh machine) unless --warm-triton. Prints the build time and the builder's log
(its last lines say how long tactic timing took per kernel family), and with --cprofile the functions with the most
cumulative time (cProfile slows the build down).

With --new-batch N: an engine with a batch profile (1 to 2x the workload's batch, opt at its batch) is built first,
and what is profiled is the first run of batch N (its specialization, context and run: issue 20's first run of a new
shape); --device cpu runs either on the CPU (FP32).

    python bench/build_profile.py --workload resnet50:256 [--opt-level 3] [--cprofile] [--new-batch 48] [--out DIR]
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
parser.add_argument("--new-batch", type=int, help="profile the first run of this batch on a profiled engine")
parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
parser.add_argument("--out", default=os.environ.get("OUT", "."))
args = parser.parse_args()
if not args.warm_triton:  # before triton is imported: it reads the variable once
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-cache-")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorkiln as tk  # noqa: E402
from tensorkiln.builder import BuilderConfig, Target  # noqa: E402
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.plan.profiles import profiles_from_shape_specs  # noqa: E402
from tensorkiln.profile_builder import ModelSource, build_with_profiles  # noqa: E402
from tensorkiln.quant.precision import Precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peers import export_onnx  # noqa: E402
from models import make_inputs, make_model  # noqa: E402


def export_dynamic(name: str, batch: int, path: str) -> list[str]:
    """The workload with a dynamic batch dim; its input names."""
    inputs = make_inputs(name, batch, "cpu")
    torch.onnx.export(make_model(name).eval(), tuple(inputs.values()), path, input_names=list(inputs),
                      output_names=["output"], opset_version=17, dynamo=False,
                      dynamic_axes={**{n: {0: "batch"} for n in inputs}, "output": {0: "batch"}})
    return list(inputs)


def first_run_of_new_batch(name: str, batch: int, folder: str, config, profiler) -> tuple[float, list[str]]:
    """Seconds of the first run of --new-batch on an engine with a batch profile (its build is not profiled)."""
    onnx_path = os.path.join(folder, f"{name}.onnx")
    export_dynamic(name, batch, onnx_path)
    shapes = {n: tuple(t.shape) for n, t in make_inputs(name, batch, "cpu").items()}
    low, opt, high = ({n: (b, *s[1:]) for n, s in shapes.items()} for b in (1, batch, 2 * batch))
    [profile] = profiles_from_shape_specs([low], [opt], [high])
    engine = build_with_profiles(ModelSource.from_onnx(onnx_path), [profile], config, prebuild="opt")
    context = engine.create_execution_context()
    feed = make_inputs(name, args.new_batch, args.device)
    start = time.perf_counter()
    if args.cprofile:
        profiler.enable()
    context.execute(feed)
    if args.device == "cuda":
        torch.cuda.synchronize()
    profiler.disable()
    seconds = time.perf_counter() - start
    return seconds, [f"specialization: {engine.specialization_seconds[-1] * 1000:.1f} ms of the first run"]


def main() -> None:
    name, batch = args.workload.split(":")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as folder:
        config = BuilderConfig(target=Target(args.device), precision=Precision.FP16 if cuda else Precision.FP32,
                               opt_level=args.opt_level, timing_cache=Path(folder, "timing.cache"))
        if cuda:
            torch.cuda.init()
        if args.new_batch:
            seconds, log = first_run_of_new_batch(name, int(batch), folder, config, profiler)
            what = f"first run of batch {args.new_batch} (opt batch {batch})"
        else:
            onnx_path = os.path.join(folder, f"{name}.onnx")
            export_onnx(make_model(name).eval(), make_inputs(name, int(batch), "cpu"), onnx_path)
            builder = tk.Builder(config)
            start = time.perf_counter()
            if args.cprofile:
                profiler.enable()
            builder.build(parse_onnx(onnx_path))
            profiler.disable()
            seconds, log = time.perf_counter() - start, builder.build_log[-7:]
            what = (f"{config.precision.value} build, opt level {args.opt_level}, Triton cache "
                    f"{'warm' if args.warm_triton else 'empty'}")
    report = io.StringIO()
    if args.cprofile:
        pstats.Stats(profiler, stream=report).sort_stats("cumulative").print_stats(args.top)
    device = torch.cuda.get_device_name() if cuda else "CPU"
    text = (f"{device}: {args.workload} {what}: {seconds:.3f} s (parse included)\n\n" + "\n".join(log) + "\n\n"
            + report.getvalue())
    print(text)
    Path(out, f"build_profile_{name}_{batch}.txt").write_text(text)


if __name__ == "__main__":
    main()
