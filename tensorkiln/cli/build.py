"""`kiln build`: ONNX model -> optimized engine file, with a summary of what the build did."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..errors import BuildError
from .display import format_bytes, io_table, key_value_table, make_console, target_description
from .inputs import CommandLineError, parse_shapes

REDUCED_PRECISION_FLAGS = ("fp16", "bf16", "best", "int8")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "build", help="build an engine from an ONNX model",
        description="Parse an ONNX model, optimize it, and save the engine (trtexec --onnx ... --saveEngine ...).")
    parser.add_argument("model", nargs="?", metavar="MODEL.onnx", help="the ONNX model to build")
    parser.add_argument("--onnx", metavar="MODEL.onnx", help="the ONNX model (trtexec spelling of MODEL.onnx)")
    parser.add_argument("-o", "--output", "--saveEngine", dest="output", metavar="PATH",
                        help="where to save the engine (default: the model's path with the suffix .engine)")
    parser.add_argument("--shapes", metavar="NAME:DIMS[,NAME:DIMS...]",
                        help="fixed shapes of inputs, e.g. input:1x3x224x224,mask:1x10; engines are built for fixed "
                             "shapes, and a dynamic batch dimension not given here becomes 1")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="the target the engine is built and tuned for (default: cpu)")
    precision = parser.add_argument_group("precision (FP32 unless one is given)")
    precision.add_argument("--fp16", action="store_true", help="compute in FP16 where it is safe (CUDA target)")
    precision.add_argument("--bf16", action="store_true", help="compute in BF16 where it is safe (CUDA target)")
    precision.add_argument("--best", action="store_true",
                           help="the fastest precision available: FP16 with FP32 fallback (CUDA target)")
    precision.add_argument("--int8", action="store_true", help="INT8 with calibration (not supported yet)")
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--opt-level", type=int, choices=range(6), default=3, metavar="{0..5}",
                        help="0 takes the first candidate kernel of each layer; 1..5 time the candidates with more "
                             "runs each (CUDA target; default: 3)")
    tuning.add_argument("--timing-cache", "--timingCacheFile", dest="timing_cache", metavar="PATH",
                        help="timing cache file, read before the build and updated after it (makes rebuilds fast)")
    debug = parser.add_argument_group("diagnostics")
    debug.add_argument("--verbose", "-v", action="store_true",
                       help="print the builder's log: every pass with its rewrite counts, precisions, memory plan")
    debug.add_argument("--dump-passes", metavar="DIR",
                       help="write the network as text after every pass into DIR (created if missing)")
    debug.add_argument("--debug", action="store_true",
                       help="verify the IR's invariants after every pass (slower; finds the pass that broke it)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from ..builder import Builder
    from ..importers.onnx import parse_onnx  # imported before the clock starts: parse time excludes imports

    console = make_console()
    model = _model_path(args)
    output = Path(args.output) if args.output else model.with_suffix(".engine")
    config = _builder_config(args)
    shapes = parse_shapes(args.shapes)

    start = time.perf_counter()
    network = _parse(parse_onnx, model, shapes, args.verbose, console)
    parse_seconds = time.perf_counter() - start
    builder = Builder(config)
    start = time.perf_counter()
    try:
        engine = builder.build(network)
    finally:  # the log up to a failure is what explains it
        if args.verbose:
            for line in builder.build_log:
                console.print(f"[build] {line}")
    build_seconds = time.perf_counter() - start
    output.parent.mkdir(parents=True, exist_ok=True)
    engine.save(output)

    plan = engine.plan
    counts = ", ".join(f"{k}={v}" for k, v in plan.build_info.get("pass_counts", {}).items() if v) or "none"
    console.print(key_value_table("build summary", [
        ("model", model), ("engine", output), ("target", target_description(plan)), ("precision", plan.precision),
        ("layers", f"{plan.build_info.get('layers_before', '?')} before optimization -> {len(plan.steps)} after"),
        ("rewrites", counts), ("parse time", f"{parse_seconds:.3f} s"), ("build time", f"{build_seconds:.3f} s"),
        ("weights", format_bytes(engine.weights_nbytes)), ("engine size", format_bytes(output.stat().st_size)),
    ]))
    console.print(io_table(plan))
    if args.dump_passes:
        console.print(f"network after each pass written to {args.dump_passes}")
    return 0


def _model_path(args: argparse.Namespace) -> Path:
    if args.model and args.onnx and args.model != args.onnx:
        raise CommandLineError(f"two models given ({args.model} and --onnx={args.onnx}); give one")
    model = args.model or args.onnx
    if not model:
        raise CommandLineError("no model given; usage: kiln build MODEL.onnx -o MODEL.engine")
    return Path(model)


def _builder_config(args: argparse.Namespace):
    from ..builder import BuilderConfig, Target

    return BuilderConfig(target=Target(args.device), precision=_precision(args), opt_level=args.opt_level,
                         timing_cache=Path(args.timing_cache) if args.timing_cache else None, debug=args.debug,
                         dump_dir=Path(args.dump_passes) if args.dump_passes else None, verbose=args.verbose)


def _precision(args: argparse.Namespace):
    from ..quant.precision import Precision

    requested = ["--" + flag for flag in REDUCED_PRECISION_FLAGS if getattr(args, flag)]
    if requested and args.device == "cpu":
        raise BuildError(f"{' and '.join(requested)} {'is' if len(requested) == 1 else 'are'} not supported on "
                         "the CPU target yet; leave it out to build an FP32 engine, or build for a GPU with "
                         "--device cuda")
    if args.int8:
        raise BuildError("--int8 is not supported yet (tensorkiln has no INT8 calibration); use --fp16 or --bf16")
    if args.fp16 and args.bf16:
        raise BuildError("--fp16 and --bf16 exclude each other; give one")
    if args.bf16:
        return Precision.BF16
    return Precision.FP16 if args.fp16 or args.best else Precision.FP32


def _parse(parse_onnx, model: Path, shapes: dict[str, tuple[int, ...]], verbose: bool, console):
    if not verbose:
        return parse_onnx(model, input_shapes=shapes or None)
    # the importer logs decisions the user should see (a dynamic batch dimension set to 1, ...)
    handler = _ConsoleHandler(console, "[import] ")
    logger = logging.getLogger("tensorkiln.importers")
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return parse_onnx(model, input_shapes=shapes or None)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)


class _ConsoleHandler(logging.Handler):
    def __init__(self, console, prefix: str):
        super().__init__(logging.INFO)
        self.console, self.prefix = console, prefix

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.prefix + record.getMessage())
