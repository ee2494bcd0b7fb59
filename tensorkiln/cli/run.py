"""`kiln run`: execute an engine once, on random inputs or on inputs from .npy/.npz files, and show the outputs."""
from __future__ import annotations

import argparse
import time

import numpy as np
from rich.table import Table

from .display import format_number, format_shape, make_console
from .profile_args import concrete_engine
from .inputs import add_input_arguments, add_memory_budget_argument, as_numpy, make_feed, non_negative_int

DEFAULT_VALUES_SHOWN = 6


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run an engine once and show its outputs",
                                   description="Run an engine once and print statistics and the first values of "
                                               "each output.")
    parser.add_argument("engine", metavar="ENGINE", help="the engine file (made by `kiln build`)")
    add_input_arguments(parser)
    add_memory_budget_argument(parser)
    parser.add_argument("--save-inputs", metavar="FILE.npz", help="save the inputs used (random or loaded)")
    parser.add_argument("--save-outputs", metavar="FILE.npz", help="save the outputs, one array per output name")
    parser.add_argument("--values", type=non_negative_int, default=DEFAULT_VALUES_SHOWN, metavar="N",
                        help=f"how many leading values of each output to show (default: {DEFAULT_VALUES_SHOWN})")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from ..runtime import Runtime

    console = make_console()
    engine = concrete_engine(Runtime().load(args.engine), args)  # engines with profiles: --shapes, --profile
    feed, sources = make_feed(engine.inputs, args.inputs, args.seed, args.limits)
    context = engine.create_execution_context(limits=args.limits)
    start = time.perf_counter()
    outputs = context.execute(feed)
    seconds = time.perf_counter() - start
    outputs = {name: as_numpy(value) for name, value in outputs.items()}

    inputs_table = Table(title="inputs", title_justify="left")
    for column in ("name", "shape", "dtype", "source"):
        inputs_table.add_column(column)
    for spec in engine.inputs:
        inputs_table.add_row(spec.name, format_shape(spec.shape, spec.dim_names), spec.dtype.value,
                             sources[spec.name])
    console.print(inputs_table)
    console.print(outputs_table(engine.outputs, outputs, args.values))
    console.print(f"executed in {seconds * 1000:.3f} ms (one run, including first-use setup; "
                  "`kiln bench` measures latency)")
    if args.save_inputs:
        np.savez(args.save_inputs, **{name: as_numpy(value) for name, value in feed.items()})
        console.print(f"inputs saved to {args.save_inputs}")
    if args.save_outputs:
        np.savez(args.save_outputs, **outputs)
        console.print(f"outputs saved to {args.save_outputs}")
    return 0


def outputs_table(specs, outputs: dict[str, np.ndarray], values_shown: int) -> Table:
    table = Table(title="outputs", title_justify="left")
    for column in ("name", "shape", "dtype", "min", "max", "mean", "first values"):
        table.add_column(column, justify="right" if column in ("min", "max", "mean") else "left")
    for spec in specs:
        array = outputs[spec.name]
        table.add_row(spec.name, format_shape(array.shape, spec.dim_names), spec.dtype.value,
                      *_statistics(array), _first_values(array, values_shown))
    return table


def _statistics(array: np.ndarray) -> tuple[str, str, str]:
    """min, max, mean; booleans count as 0/1, an empty output has none."""
    if array.size == 0:
        return "-", "-", "-"
    numbers = array.astype(np.int64) if array.dtype == np.bool_ else array
    minimum, maximum = numbers.min().item(), numbers.max().item()
    return format_number(minimum), format_number(maximum), format_number(float(numbers.mean(dtype=np.float64)))


def _first_values(array: np.ndarray, count: int) -> str:
    flat = array.reshape(-1)
    shown = ", ".join(format_number(v.item()) for v in flat[:count])
    return shown + (", ..." if flat.size > count else "")
