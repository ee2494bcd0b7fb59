"""`kiln compare`: an engine's outputs (and with --layerwise every named intermediate tensor) against onnxruntime's on
the same inputs, Polygraphy style; --check-precision finds the layers a reduced-precision build must keep in FP32.

Exit codes: 0 every output within the tolerance, 1 some output past it, 2 an error (as every kiln command)."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from .display import format_shape, key_value_table, make_console
from .inputs import CommandLineError, add_memory_budget_argument, make_feed, non_negative_float, parse_shapes
from .int8_args import add_int8_arguments, check_int8_flags, int8_options

HELP = "compare an engine's outputs with onnxruntime's, layer by layer"
FAILED_EXIT_CODE = 1


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help=HELP,
        description="Run an ONNX model on onnxruntime (CPU) and on a tensorkiln engine (given, or built from the "
                    "model with the precision flags) on the same inputs, and compare every output: largest absolute "
                    "and relative error, NaN positions, cosine similarity, pass or fail at the tolerance. Exit code "
                    "0: all outputs pass; 1: some fail; 2: an error.")
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model (onnxruntime runs it as the reference)")
    parser.add_argument("--engine", metavar="ENGINE",
                        help="an engine built from MODEL (default: build one here with the flags below)")
    data = parser.add_argument_group("inputs (default: random, seeded, never all zero)")
    data.add_argument("--inputs", action="append", metavar="NAME:FILE.npy,...|FILE.npz",
                      help="input values: NAME:FILE.npy items (comma-separated, or --inputs repeated), or an .npz "
                           "of arrays named like the inputs; inputs not given get random values")
    data.add_argument("--inputs-npz", action="append", metavar="FILE.npz", help="an .npz of arrays named like the "
                                                                                "inputs (same as --inputs FILE.npz)")
    data.add_argument("--seed", type=int, default=0,
                      help="seed of the random inputs: standard normal floats, small non-negative integers, random "
                           "booleans (default: 0)")
    data.add_argument("--shapes", metavar="NAME:DIMS[,NAME:DIMS...]",
                      help="fixed shapes of the model's dynamic inputs when building, e.g. input:1x3x224x224")
    build = parser.add_argument_group("the build (without --engine; as kiln build)")
    build.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the engine's target (default: cpu)")
    build.add_argument("--fp16", action="store_true", help="FP16 where it is safe (CUDA target)")
    build.add_argument("--bf16", action="store_true", help="BF16 where it is safe (CUDA target)")
    build.add_argument("--int8", action="store_true", help="INT8 convolutions and GEMMs at calibrated scales")
    build.add_argument("--layer-precisions", metavar="@FILE|NAME:PRECISION,...",
                       help="keep layers at a precision: a file kiln compare --check-precision wrote, or inline "
                            "step names and precisions (fp32, tf32, fp16, bf16), e.g. Conv:185.fused:fp32")
    add_int8_arguments(parser)
    add_memory_budget_argument(parser)
    check = parser.add_argument_group("what to compare")
    check.add_argument("--atol", type=non_negative_float, metavar="X",
                       help="absolute tolerance (default by the engine's precision: fp32 1e-4, fp16 1e-2, bf16 5e-2, "
                            "int8 0.1); an element passes when |engine - onnxruntime| <= atol + rtol * |onnxruntime|")
    check.add_argument("--rtol", type=non_negative_float, metavar="X",
                       help="relative tolerance (default by precision: fp32 1e-3, fp16 1e-2, bf16 5e-2, int8 0.1)")
    check.add_argument("--layerwise", action="store_true",
                       help="also compare every intermediate tensor that survives fusion, in execution order, and "
                            "name the first layer past the tolerance")
    check.add_argument("--check-precision", action="store_true",
                       help="when a reduced-precision build (--fp16, --bf16, --int8) fails, find the layers that must "
                            "stay in FP32 for it to pass (rebuilding it with some layers in FP32 at a time) and write "
                            "them to --precision-file for kiln build --layer-precisions @FILE")
    check.add_argument("--precision-file", metavar="FILE.json",
                       help="where --check-precision writes the layer precisions (default: MODEL.precisions.json in "
                            "the working directory)")
    parser.set_defaults(handler=main, best=False, verbose=False)  # read by the shared precision and INT8 helpers


def main(args: argparse.Namespace) -> int:
    from ..tools.compare import compare_with_onnxruntime
    from ..tools.tensor_diff import DEFAULT_TOLERANCES, Tolerance

    console = make_console()
    _check_flags(args)
    model = Path(args.model)
    shapes = parse_shapes(args.shapes)
    engine, config = _engine_and_config(args, model, shapes)
    input_args = [*(args.inputs or []), *(args.inputs_npz or [])]
    feed, sources = make_feed(engine.inputs, input_args, args.seed, args.limits)
    default = DEFAULT_TOLERANCES.get(engine.plan.precision, DEFAULT_TOLERANCES["fp32"])
    tolerance = Tolerance(default.atol if args.atol is None else args.atol,
                          default.rtol if args.rtol is None else args.rtol)
    result = compare_with_onnxruntime(model, engine, inputs=feed, tolerance=tolerance, layerwise=args.layerwise,
                                      limits=args.limits)
    console.print(key_value_table("compare", [
        ("model", model), ("engine", args.engine or "built here"), ("precision", engine.plan.precision),
        ("reference", "onnxruntime, CPU provider"), ("tolerance", str(tolerance)),
        ("inputs", "; ".join(f"{name}: {source}" for name, source in sources.items()))]))
    console.print(outputs_table(result.outputs))
    if args.layerwise:
        console.print(layers_table(result.layers))
        console.print(_first_failing_line(result))
    failed = result.failed_outputs
    console.print(f"PASSED: all {len(result.outputs)} outputs within {tolerance}" if not failed else
                  f"FAILED: {len(failed)} of {len(result.outputs)} outputs past {tolerance}: "
                  + ", ".join(output.name for output in failed))
    if args.check_precision:
        _check_precision(args, model, engine, config, feed, shapes, tolerance, result.passed, console)
    return 0 if result.passed else FAILED_EXIT_CODE


def _check_flags(args: argparse.Namespace) -> None:
    building = args.fp16 or args.bf16 or args.int8 or args.layer_precisions or args.device != "cpu" or args.shapes
    if args.engine and building:
        raise CommandLineError("--engine takes an engine built before; the build flags (--device, --fp16, --bf16, "
                               "--int8, --layer-precisions, --shapes) apply when compare builds one: leave them out")
    if args.check_precision and args.engine:
        raise CommandLineError("--check-precision rebuilds the engine from the model: leave out --engine and give the "
                               "build's flags (e.g. --fp16 --device cuda, or --int8 --calib DATA)")
    if args.check_precision and not (args.fp16 or args.bf16 or args.int8):
        raise CommandLineError("--check-precision looks for the layers a reduced-precision build must keep in FP32: "
                               "add --fp16, --bf16 or --int8")
    if args.precision_file and not args.check_precision:
        raise CommandLineError("--precision-file is where --check-precision writes its result: add --check-precision")
    check_int8_flags(args)


def _engine_and_config(args: argparse.Namespace, model: Path, shapes: dict):
    """(engine, the BuilderConfig it was built with, or None for a given engine)."""
    if args.engine:
        from ..runtime import Runtime

        return Runtime().load(args.engine), None
    from ..builder import Builder, BuilderConfig, Target
    from ..importers.onnx import parse_onnx
    from ..tools.precision import layer_precisions_config
    from .build import _precision

    network = parse_onnx(model, input_shapes=shapes or None, limits=args.limits)
    limits = {} if args.limits is None else {"limits": args.limits}  # else the config's default
    config = BuilderConfig(target=Target(args.device), precision=_precision(args),
                           layer_precisions=layer_precisions_config(args.layer_precisions),
                           int8=int8_options(args, network.ir), **limits)
    if args.check_precision:  # the search rebuilds with the same calibration: wrap the calibrator before the first
        from ..tools.precision import with_reusable_calibration

        config = with_reusable_calibration(config)
    return Builder(config).build(network), config


def _first_failing_line(result) -> str:
    first = result.first_failing_layer
    if first is None:
        return (f"every compared layer is within the tolerance ({len(result.layers)} tensors; "
                f"{result.uncompared_steps} steps have outputs only inside a fusion)")
    fused = f", fused from {' + '.join(first.fused_from)}" if len(first.fused_from) > 1 else ""
    return (f"first layer past the tolerance: {first.layer} ({first.kind}, tactic {first.tactic}{fused}): output "
            f"{first.name!r}, max abs error {first.max_abs_error:.3g}, {first.mismatched} of {first.size} elements "
            "past the tolerance")


def _check_precision(args, model: Path, engine, config, feed, shapes, tolerance, passed: bool, console) -> None:
    from ..tools.precision import find_precision_layers, write_layer_precisions

    if passed:
        console.print("check-precision: the engine passes as built; no layer needs FP32")
        return
    console.print(f"check-precision: rebuilding the {config.precision.value} engine with layers in FP32 to find the "
                  "ones it needs ...")
    search = find_precision_layers(
        model, config, engine=engine, inputs=feed, shapes=shapes, tolerance=tolerance, limits=args.limits,
        on_build=lambda kept, ok: console.print(f"  FP32 layers {kept}: {'passes' if ok else 'fails'}"))
    # by default in the working directory: a model's folder may be read-only, or shared
    path = Path(args.precision_file) if args.precision_file else Path(model.stem + ".precisions.json")
    given = {name: precision.value for name, precision in config.layer_precisions}  # --layer-precisions
    write_layer_precisions(path, {**given, **search.overrides()}, model=str(model), precision=search.precision,
                           tolerance={"atol": tolerance.atol, "rtol": tolerance.rtol})
    console.print(f"check-precision: {len(search.layers)} of {search.candidates} layers must stay in FP32 "
                  f"({search.builds} builds): {', '.join(search.layers)}")
    console.print(f"written to {path}; build with the same flags and --layer-precisions @{path}")


# ---- tables ------------------------------------------------------------------------------------
def outputs_table(outputs) -> Table:
    table = Table(title="outputs", title_justify="left")
    for column in ("output", "shape", *_ERROR_COLUMNS):
        table.add_column(column, justify="left" if column in ("output", "shape", "result") else "right")
    for output in outputs:
        table.add_row(output.name, format_shape(output.shape), *_error_cells(output))
    return table


def layers_table(layers) -> Table:
    table = Table(title="layers, in execution order (each step's output that the model names)", title_justify="left")
    for column in ("#", "step", "kind", "output", *_ERROR_COLUMNS):
        table.add_column(column, justify="left" if column in ("step", "kind", "output", "result") else "right")
    for index, layer in enumerate(layers):
        table.add_row(str(index), layer.layer, layer.kind, layer.name, *_error_cells(layer))
    return table


_ERROR_COLUMNS = ("max abs err", "max rel err", "mean abs err", "cosine", "NaN mismatch", "past tol", "result")


def _error_cells(comparison) -> tuple[str, ...]:
    if comparison.note:
        return ("-", "-", "-", "-", "-", "-", f"FAIL ({comparison.note})")
    past = f"{comparison.mismatched} ({100 * comparison.mismatched_fraction:.2g}%)" if comparison.mismatched else "0"
    return (f"{comparison.max_abs_error:.3g}", f"{comparison.max_rel_error:.3g}", f"{comparison.mean_abs_error:.3g}",
            f"{comparison.cosine:.6f}", str(comparison.nan_mismatches), past,
            "PASS" if comparison.passed else "FAIL")
