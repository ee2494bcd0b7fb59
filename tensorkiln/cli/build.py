"""`kiln build`: ONNX model or Caffe net -> optimized engine file, with a summary of what the build did.

The classic giexec/trtexec flags are accepted: `--deploy net.prototxt --model net.caffemodel --output prob`
(Caffe), `--batch`, `--iterations`/`--avgRuns` (time the engine after building it), `--workspace`,
`--fp16`/`--half2`, `--engine`/`--saveEngine`, `--loadEngine` (time an engine built before)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from ..errors import BuildError
from ..passes.manager import OPT_IN_PASSES, pipeline_with
from .display import format_bytes, io_table, key_value_table, make_console, target_description, warn
from .input_values import declared_inputs, parse_input_values
from .inputs import CommandLineError, add_memory_budget_argument, limits_from, make_feed, parse_shapes, positive_int
from .int8_args import add_int8_arguments, check_int8_flags, int8_options
from .model_kind import check_not_caffe, parse_other_kind
from .profile_args import add_profile_arguments, build_main as build_with_profiles_main, has_profiles

REDUCED_PRECISION_FLAGS = ("fp16", "bf16", "best", "int8")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "build", help="build an engine from an ONNX model or a Caffe net",
        description="Parse an ONNX model (or a Caffe deploy.prototxt + caffemodel), optimize it, and save the "
                    "engine (trtexec --onnx ... --saveEngine ...; giexec --deploy ... --model ... --output ...).")
    parser.add_argument("model", nargs="?", metavar="MODEL.onnx", help="the ONNX model to build")
    parser.add_argument("--onnx", metavar="MODEL.onnx", help="the ONNX model (trtexec spelling of MODEL.onnx)")
    parser.add_argument("--deploy", metavar="NET.prototxt", help="a Caffe net's text definition (deploy.prototxt)")
    parser.add_argument("--model", dest="caffemodel", metavar="NET.caffemodel",
                        help="the Caffe net's trained weights (with --deploy); an .onnx file here is the ONNX model")
    parser.add_argument("--output", dest="outputs", action="append", metavar="BLOB",
                        help="a Caffe output blob (repeatable; default: the blobs no layer reads)")
    parser.add_argument("-o", "--saveEngine", "--engine", dest="engine_path", metavar="PATH",
                        help="where to save the engine (default: the model's path with the suffix .engine)")
    parser.add_argument("--loadEngine", dest="load_engine", metavar="PATH",
                        help="load an engine built before instead of building one (with --iterations: time it)")
    parser.add_argument("--batch", type=positive_int, metavar="N", help="batch size of a Caffe net's inputs")
    parser.add_argument("--allow-fallback", action="store_true",
                        help="run ONNX operators without a converter on onnx's reference implementation (slow) "
                             "instead of failing; the build lists each such layer")
    parser.add_argument("--shapes", metavar="NAME:DIMS[,NAME:DIMS...]",
                        help="fixed shapes of inputs, e.g. input:1x3x224x224,mask:1x10; a dynamic batch dimension "
                             "not given here becomes 1 (for a range of shapes: --minShapes/--optShapes/--maxShapes)")
    parser.add_argument("--input-values", metavar="NAME:VALUE|NAME:FILE.npy[,...]",
                        help="fix inputs that select shapes or branches at build time (ONNX), e.g. sr:16000, "
                             "axes:0,1 or pads:pads.npy; values take the model's declared dtype, and the engine no "
                             "longer takes these inputs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="the target the engine is built and tuned for (default: cpu)")
    add_memory_budget_argument(parser, max_layers=True)
    add_profile_arguments(parser)
    precision = parser.add_argument_group("precision (FP32 unless one is given)")
    precision.add_argument("--fp16", "--half2", dest="fp16", action="store_true",
                           help="compute in FP16 where it is safe (CUDA target; --half2 is giexec's spelling)")
    precision.add_argument("--bf16", action="store_true", help="compute in BF16 where it is safe (CUDA target)")
    precision.add_argument("--best", action="store_true",
                           help="the fastest precision available: FP16 with FP32 fallback (CUDA target)")
    precision.add_argument("--int8", action="store_true",
                           help="INT8 convolutions and GEMMs at calibrated scales (simulated INT8 on the CPU: see the "
                                "calibration flags)")
    precision.add_argument("--layer-precisions", metavar="@FILE|NAME:PRECISION,...",
                           help="per-layer precisions: a file kiln compare --check-precision wrote, or inline step "
                                "names (as kiln inspect --layers lists them) and precisions (fp32, tf32, fp16, bf16), "
                                "e.g. Conv:185.fused:fp32")
    add_int8_arguments(parser)
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--opt-level", type=int, choices=range(6), metavar="{0..5}",
                        help="build effort (CUDA target): 0 takes the first candidate kernel of each layer, 1 times "
                             "library kernels, 2 adds one config of each generated Triton kernel, 3..5 time every "
                             "config with more runs each (default: 3)")
    tuning.add_argument("--tactic-sources", "--tacticSources", dest="tactic_sources", metavar="[+-]SOURCE,...",
                        help="kernel libraries to leave out (-) or keep (+), trtexec style: torch, cudnn, cublaslt "
                             "(trtexec's CUBLAS and CUBLAS_LT), triton; e.g. --tactic-sources=-cudnn,-cublaslt "
                             "times only Triton and PyTorch kernels (default: all)")
    tuning.add_argument("--passes", metavar="[+-]PASS,...",
                        help="graph passes to add (+) to or leave out (-) of the default pipeline, e.g. "
                             "--passes=-forward_residual_bias,+approximate_gelu (opt-in passes: "
                             + (", ".join(OPT_IN_PASSES) or "none") + ")")
    tuning.add_argument("--timing-cache", "--timingCacheFile", dest="timing_cache", metavar="PATH",
                        help="timing cache file, read before the build and updated after it (makes rebuilds fast)")
    tuning.add_argument("--workspace", type=positive_int, metavar="MIB",
                        help="memory budget in MiB for the activations; tensorkiln plans them itself, and warns "
                             "when the plan needs more")
    timing = parser.add_argument_group("timing after the build (giexec)")
    timing.add_argument("--iterations", type=positive_int, metavar="N", help="time N rounds of executions")
    timing.add_argument("--avgRuns", dest="avg_runs", type=positive_int, default=10, metavar="N",
                        help="executions averaged per round (default: 10)")
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
    args.limits = limits_from(args)  # --memory-budget with --max-layers
    if args.load_engine:
        return _load_and_time(args, console)
    source = _model_source(args)
    model = source[0]
    output = Path(args.engine_path) if args.engine_path else model.with_suffix(".engine")
    config = _builder_config(args)
    _warn_ignored_flags(args)
    check_int8_flags(args)
    shapes = parse_shapes(args.shapes)
    if has_profiles(args):
        return build_with_profiles_main(args, console, config, source, output)

    start = time.perf_counter()
    network = _parse(lambda: _import(parse_onnx, source, shapes, args), args.verbose, console)
    parse_seconds = time.perf_counter() - start
    config = dataclasses.replace(config, int8=int8_options(args, network.ir if hasattr(network, "ir") else network))
    builder = Builder(config)
    start = time.perf_counter()
    try:
        engine = builder.build(network)
    finally:  # the log up to a failure is what explains it; its warnings are shown without --verbose too
        for line in builder.build_log:
            if args.verbose:
                console.print(f"[build] {line}")
            elif line.startswith("warning: "):
                warn(line.removeprefix("warning: "))
    build_seconds = time.perf_counter() - start
    for step in engine.plan.steps:
        if step.kind == "onnx_fallback":
            console.print(f"[build] fallback layer: {step.name} ({step.op.op_type}) runs on onnx's reference "
                          "implementation")
    output.parent.mkdir(parents=True, exist_ok=True)
    engine.save(output)

    plan = engine.plan
    counts = ", ".join(f"{k}={v}" for k, v in plan.build_info.get("pass_counts", {}).items() if v) or "none"
    console.print(key_value_table("build summary", [
        ("model", " + ".join(str(p) for p in source if p)), ("engine", output),
        ("target", target_description(plan)), ("precision", plan.precision),
        ("layers", f"{plan.build_info.get('layers_before', '?')} before optimization -> {len(plan.steps)} after"),
        ("rewrites", counts), ("parse time", f"{parse_seconds:.3f} s"), ("build time", f"{build_seconds:.3f} s"),
        ("weights", format_bytes(engine.weights_nbytes)), ("engine size", format_bytes(output.stat().st_size)),
    ]))
    console.print(io_table(plan))
    if args.dump_passes:
        console.print(f"network after each pass written to {args.dump_passes}")
    _check_workspace(engine, args.workspace, console)
    if args.iterations:
        _time_engine(engine, args, console)
    return 0


def _model_source(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(ONNX model, None) or (Caffe prototxt, caffemodel), from the positional model and the flags."""
    if args.deploy:
        if args.input_values:
            raise CommandLineError("--input-values applies to ONNX models; a Caffe net's inputs are all run-time "
                                   "inputs (--shapes or --batch set their shapes)")
        if args.model or args.onnx:
            raise CommandLineError("give either an ONNX model or a Caffe net (--deploy with --model), not both")
        if not args.caffemodel:
            raise CommandLineError("--deploy needs the trained weights too: --model NET.caffemodel")
        return Path(args.deploy), Path(args.caffemodel)
    if args.caffemodel:
        if not args.caffemodel.endswith(".onnx"):
            raise CommandLineError(f"--model {args.caffemodel} is a Caffe model: give its net with --deploy "
                                   "NET.prototxt")
        if args.model or args.onnx:
            raise CommandLineError("two models given; give one")
        args.model = args.caffemodel
    if args.outputs or args.batch:
        raise CommandLineError("--output and --batch apply to Caffe nets (--deploy); for an ONNX model the outputs "
                               "are the graph's, and --shapes sets the batch")
    model = _model_path(args)
    check_not_caffe(model)
    return model, None


def _import(parse_onnx, source: tuple[Path, Path | None], shapes: dict, args: argparse.Namespace):
    deploy, caffemodel = source
    other = parse_other_kind(deploy, shapes) if caffemodel is None and not args.input_values else None
    if other is not None:  # a TFLite or TensorFlow model
        return other
    if caffemodel is None:
        values = (parse_input_values(args.input_values, declared_inputs(deploy), args.limits) if args.input_values
                  else None)
        return parse_onnx(deploy, input_shapes=shapes or None, input_values=values, allow_fallback=args.allow_fallback,
                          limits=args.limits)
    from ..importers.caffe import parse_caffe

    return parse_caffe(deploy, caffemodel, outputs=args.outputs, input_shapes=shapes or None, batch_size=args.batch,
                       limits=args.limits)


def _load_and_time(args: argparse.Namespace, console) -> int:
    from ..runtime import Runtime

    if args.model or args.onnx or args.deploy or args.caffemodel:
        raise CommandLineError("--loadEngine takes an engine built before; leave out the model")
    engine = Runtime().load(args.load_engine)
    console.print(key_value_table("engine", [("engine", args.load_engine), ("target", target_description(engine.plan)),
                                             ("precision", engine.plan.precision), ("layers", len(engine.plan.steps))]))
    console.print(io_table(engine.plan))
    _check_workspace(engine, args.workspace, console)
    if args.iterations:
        _time_engine(engine, args, console)
    return 0


def _check_workspace(engine, workspace_mib: int | None, console) -> None:
    if workspace_mib and engine.arena_nbytes > workspace_mib * 2 ** 20:
        console.print(f"warning: the engine's activations need {format_bytes(engine.arena_nbytes)}, more than "
                      f"--workspace {workspace_mib} MiB")


def _time_engine(engine, args: argparse.Namespace, console) -> None:
    """giexec's timing: --iterations rounds of --avgRuns executions on random inputs, the average of each."""
    context = engine.create_execution_context(limits=args.limits)
    feed, _ = make_feed(engine.inputs, None, seed=0, limits=args.limits)
    context.execute(feed)  # warm up
    averages = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        for _ in range(args.avg_runs):
            context.execute(feed)
        averages.append((time.perf_counter() - start) / args.avg_runs * 1000)
        console.print(f"Average over {args.avg_runs} runs is {averages[-1]:.4f} ms.")
    averages.sort()
    console.print(f"median of {len(averages)} rounds: {averages[len(averages) // 2]:.4f} ms per execution")


def _model_path(args: argparse.Namespace) -> Path:
    if args.model and args.onnx and args.model != args.onnx:
        raise CommandLineError(f"two models given ({args.model} and --onnx={args.onnx}); give one")
    model = args.model or args.onnx
    if not model:
        raise CommandLineError("no model given; usage: kiln build MODEL.onnx -o MODEL.engine, or kiln build "
                               "--deploy NET.prototxt --model NET.caffemodel --output BLOB")
    return Path(model)


def _builder_config(args: argparse.Namespace):
    from ..builder import BuilderConfig, Target
    from ..tools.precision import layer_precisions_config

    opt_level = {} if args.opt_level is None else {"opt_level": args.opt_level}  # else the config's default
    return BuilderConfig(target=Target(args.device), precision=_precision(args), **opt_level,
                         layer_precisions=layer_precisions_config(args.layer_precisions),
                         timing_cache=Path(args.timing_cache) if args.timing_cache else None, debug=args.debug,
                         dump_dir=Path(args.dump_passes) if args.dump_passes else None, verbose=args.verbose,
                         disabled_tactic_sources=parse_tactic_sources(args.tactic_sources),
                         passes=_pipeline(args.passes), **({} if args.limits is None else {"limits": args.limits}))


def _warn_ignored_flags(args: argparse.Namespace) -> None:
    """One warning per flag that does nothing on the chosen target. The CPU target times no tactics (each CPU
    layer takes its first candidate, the torch kernel), so the timing cache, the opt level and tactic sources
    other than a disabled torch (an error the builder reports) change nothing there."""
    if args.device != "cpu":
        return
    reason = "does nothing on the CPU target, which times no kernels (each CPU layer has its torch kernel)"
    if args.timing_cache:
        warn(f"--timing-cache {reason}; it is for --device cuda")
    if args.opt_level is not None:
        warn(f"--opt-level {reason}; it is for --device cuda")
    if args.tactic_sources and "torch" not in parse_tactic_sources(args.tactic_sources):
        warn(f"--tactic-sources {reason}; it is for --device cuda")


def _pipeline(changes: str | None) -> tuple[str, ...]:
    try:
        return pipeline_with(changes or "")
    except ValueError as error:
        raise CommandLineError(f"--passes: {error}") from None


def parse_tactic_sources(text: str | None) -> tuple[str, ...]:
    """`-cudnn,+cublaslt` (trtexec's --tacticSources) -> the sources left out, ("cudnn",). Every source is in by
    default; a later item overrides an earlier one."""
    from ..tactics.selection import TACTIC_SOURCE_ALIASES, TACTIC_SOURCES

    disabled: dict[str, bool] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        sign, name = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
        name = TACTIC_SOURCE_ALIASES.get(name.lower(), name.lower())
        if name not in TACTIC_SOURCES:
            raise CommandLineError(f"--tactic-sources item {item!r}: unknown source {name!r}; the sources are "
                                   f"{', '.join(TACTIC_SOURCES)}, each with + (keep) or - (leave out)")
        disabled[name] = sign == "-"
    return tuple(name for name in TACTIC_SOURCES if disabled.get(name))


def _precision(args: argparse.Namespace):
    from ..quant.precision import Precision

    requested = ["--" + flag for flag in REDUCED_PRECISION_FLAGS if getattr(args, flag) and flag != "int8"]
    if requested and args.device == "cpu":
        raise BuildError(f"{' and '.join(requested)} {'is' if len(requested) == 1 else 'are'} not supported on "
                         "the CPU target yet; leave it out to build an FP32 engine, or build for a GPU with "
                         "--device cuda")
    if args.int8:  # on a GPU an INT8 engine computes its other layers in FP16: --fp16 and --best add nothing
        if args.bf16:
            raise BuildError("--int8 with --bf16: an INT8 engine computes its unquantized layers in FP16 on a GPU; "
                             "leave out --bf16")
        return Precision.INT8
    if args.fp16 and args.bf16:
        raise BuildError("--fp16 and --bf16 exclude each other; give one")
    if args.bf16:
        return Precision.BF16
    return Precision.FP16 if args.fp16 or args.best else Precision.FP32


def _parse(parse, verbose: bool, console):
    if not verbose:
        return parse()
    # the importer logs decisions the user should see (a dynamic batch dimension set to 1, ...)
    handler = _ConsoleHandler(console, "[import] ")
    logger = logging.getLogger("tensorkiln.importers")
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return parse()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)


class _ConsoleHandler(logging.Handler):
    def __init__(self, console, prefix: str):
        super().__init__(logging.INFO)
        self.console, self.prefix = console, prefix

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.prefix + record.getMessage())
