"""Optimization profiles on the command line, in trtexec's spelling.

`kiln build --minShapes x:1x3x224x224 --optShapes x:32x3x224x224 --maxShapes x:256x3x224x224` builds an engine
that runs every shape in the range; repeating the three flags adds profiles (the k-th of each make profile k).
`kiln run`/`kiln bench` take `--shapes` (the concrete shapes to run; default the profile's opt shapes) and
`--profile N`.
"""
from __future__ import annotations

import argparse

from .inputs import CommandLineError, parse_shapes


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "optimization profiles (one engine for a range of shapes; repeat the three flags for more profiles)")
    for flag, dest, what in (("--minShapes", "min_shapes", "smallest"), ("--optShapes", "opt_shapes", "tuned-for"),
                             ("--maxShapes", "max_shapes", "largest")):
        group.add_argument(flag, dest=dest, action="append", metavar="NAME:DIMS[,NAME:DIMS...]",
                           help=f"the {what} shape of each dynamic input, e.g. input:1x3x224x224")
    group.add_argument("--prebuild", default="min,opt,max", metavar="min,opt,max",
                       help="which shapes of each profile to build into the engine file (opt always is; others are "
                            "built on first use, with the opt shape's kernels); default: min,opt,max")
    group.add_argument("--shape-tensors", metavar="NAME[,NAME...]",
                       help="integer inputs whose values set shapes (shape tensors): their entries in --minShapes, "
                            "--optShapes and --maxShapes are values, e.g. target:1x16 for the values [1, 16]")
    group.add_argument("--tune-each-shape", action="store_true",
                       help="time the kernels again for each new shape met at run time (slower first runs), "
                            "instead of taking the tactics tuned at the opt shape (the default)")


def has_profiles(args: argparse.Namespace) -> bool:
    return bool(args.min_shapes or args.opt_shapes or args.max_shapes)


def profiles_from_args(args: argparse.Namespace):
    from ..plan.profiles import profiles_from_shape_specs

    if args.shapes:
        raise CommandLineError("--shapes fixes the shapes of an engine; with --minShapes/--optShapes/--maxShapes give "
                               "an input's fixed shape as all three (or only --optShapes)")
    specs = [[parse_shapes(text) for text in getattr(args, dest) or []]
             for dest in ("min_shapes", "opt_shapes", "max_shapes")]
    shape_tensors = [name.strip() for name in (args.shape_tensors or "").split(",") if name.strip()]
    try:
        return profiles_from_shape_specs(*specs, shape_tensors=shape_tensors)
    except ValueError as error:
        raise CommandLineError(str(error)) from None


def build_profiled_engine(args: argparse.Namespace, config, model, values, on_variant):
    """The ProfiledEngine that `kiln build` makes from an ONNX model with profile flags."""
    from ..profile_builder import ModelSource, build_with_profiles

    source = ModelSource.from_onnx(model, values, args.allow_fallback)
    return build_with_profiles(source, profiles_from_args(args), config, tune_each_shape=args.tune_each_shape,
                               prebuild=args.prebuild, on_variant=on_variant)


def add_shape_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", metavar="NAME:DIMS[,NAME:DIMS...]",
                        help="the input shapes to run an engine built with optimization profiles at (default: the "
                             "profile's opt shapes)")
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="the optimization profile to run (default: 0)")


def concrete_engine(engine, args: argparse.Namespace):
    """The fixed-shape engine that `kiln run`/`bench` run: the engine itself, or for an engine with profiles its
    specialization for --shapes (default: the opt shapes) in --profile."""
    from ..runtime.profiles import ProfiledEngine

    shapes = parse_shapes(getattr(args, "shapes", None))
    index = getattr(args, "profile", None)
    if not isinstance(engine, ProfiledEngine):
        if index not in (None, 0):
            raise CommandLineError(f"--profile {index}: this engine has no optimization profiles (it was built for "
                                   "fixed shapes)")
        fixed = {spec.name: tuple(spec.shape) for spec in engine.inputs}
        for name, shape in shapes.items():
            if name not in fixed:
                raise CommandLineError(f"--shapes names {name!r}, which is not an input; the inputs are "
                                       f"{sorted(fixed)}")
            if shape != fixed[name]:
                raise CommandLineError(f"--shapes {name}:{'x'.join(map(str, shape))}: this engine was built for the "
                                       f"fixed shape {'x'.join(map(str, fixed[name]))}; rebuild it with "
                                       "--minShapes/--optShapes/--maxShapes to run other shapes")
        return engine
    index = 0 if index is None else index
    profile = engine.profiles[index] if 0 <= index < len(engine.profiles) else None
    if profile is None:
        raise CommandLineError(f"--profile {index}: the engine has profiles 0 to {len(engine.profiles) - 1}")
    unknown = sorted(set(shapes) - set(profile.names))
    if unknown:
        raise CommandLineError(f"--shapes names {unknown}, which profile {index} does not vary; it varies "
                               f"{sorted(profile.names)} (a shape tensor's entry gives its values)")
    return engine.engine_for(index, {**profile.point("opt"), **shapes})


def build_main(args: argparse.Namespace, console, config, source, output) -> int:
    """`kiln build` with profile flags: build, save, and print the profiles and the engines built ahead."""
    import time

    from .display import format_bytes, key_value_table
    from .input_values import declared_inputs, parse_input_values
    from .model_kind import parse_other_kind

    model, caffemodel = source
    if caffemodel is not None or parse_other_kind(model, {}) is not None:
        raise CommandLineError("optimization profiles need an ONNX model (the engine keeps the model to specialize "
                               "new shapes); build Caffe, TFLite and TensorFlow models per shape with --shapes")
    values = parse_input_values(args.input_values, declared_inputs(model), args.limits) if args.input_values else None
    start = time.perf_counter()
    engine = build_profiled_engine(args, config, model, values,
                                   lambda what: console.print(f"[build] building {what}") if args.verbose else None)
    seconds = time.perf_counter() - start
    output.parent.mkdir(parents=True, exist_ok=True)
    engine.save(output)
    console.print(key_value_table("build summary", [
        ("model", model), ("engine", output), ("target", engine.recipe.target), ("precision", engine.recipe.precision),
        ("profiles", len(engine.profiles)), ("engines built ahead", len(engine.built_ahead())),
        ("layers", f"{engine.num_layers} steps at profile 0's opt shapes"), ("build time", f"{seconds:.3f} s"),
        ("engine size", format_bytes(output.stat().st_size)),
    ]))
    console.print(profiles_table(engine.profiles, [(p, s, e.plan) for p, s, e in engine.built_ahead()]))
    return 0


def profiles_table(profiles, built_ahead):
    """A table of an engine's profiles: per input its min, opt and max; then the shapes built ahead
    (`built_ahead`: (profile index, {input: shape}, plan))."""
    from rich.table import Table

    table = Table(title="optimization profiles", title_justify="left")
    for column in ("profile", "input", "min", "opt", "max"):
        table.add_column(column)
    for index, profile in enumerate(profiles):
        for name, shape_range in profile.ranges:
            table.add_row(str(index), name, *("x".join(map(str, s)) for s in
                                              (shape_range.min, shape_range.opt, shape_range.max)))
        for name, value_range in profile.values:
            table.add_row(str(index), f"{name} (values)", *(str(list(v)) for v in
                                                           (value_range.min, value_range.opt, value_range.max)))
    for index, shapes, plan in built_ahead:
        described = ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items())
        table.add_row(str(index), "built ahead", described, f"{len(plan.steps)} steps", "")
    return table
