"""`kiln demo`: the main job end to end on models that ship inside the package (tensorkiln.demo): import, build
an engine, run it on bundled data, and show accuracy, the optimizations applied, and latency against onnxruntime."""
from __future__ import annotations

import argparse
import textwrap

from rich.table import Table

from .display import format_bytes, key_value_table, make_console
from .inputs import positive_int

EPILOG_WIDTH = 100


def add_parser(subparsers) -> None:
    from ..demo import BUNDLED_MODELS, DEFAULT_ITERATIONS, DEVICES, MODEL_KEYS, bundled_bytes

    parser = subparsers.add_parser(
        "demo", help="build and run the bundled models: accuracy, optimizations, latency against onnxruntime",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Import a model that ships inside tensorkiln, build an engine (on the GPU when there is one, else on "
            "the CPU), run it on bundled data, and print what it found, what the build optimized, and its latency "
            "and throughput next to onnxruntime's on this machine.", EPILOG_WIDTH),
        epilog=_models_epilog(BUNDLED_MODELS, bundled_bytes()))
    parser.add_argument("--model", choices=(*MODEL_KEYS, "all"), default="all",
                        help="which bundled model to run (default: all)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to build and run: auto takes the GPU when there is one, else the CPU "
                             "(default: auto)")
    parser.add_argument("--iterations", type=positive_int, default=DEFAULT_ITERATIONS, metavar="N",
                        help=f"timed executions of each runtime, after a short warm-up (default: {DEFAULT_ITERATIONS})")
    parser.set_defaults(handler=main)


def _models_epilog(models, total_bytes: int) -> str:
    lines = [f"bundled models ({format_bytes(total_bytes)} in all; tensorkiln/demo/data/README.md lists the files, "
             "sources and licences):"]
    for model in models:
        lines.append(f"  {model.key:<10} {model.title}, on {model.data}.")
        lines += textwrap.wrap(f"Source: {model.source}. Licence: {model.licence}.", EPILOG_WIDTH,
                               initial_indent=" " * 13, subsequent_indent=" " * 13)
    lines += ["", *textwrap.wrap("LeNet is not compared with a peer: onnxruntime cannot read Caffe nets. UltraFace's "
                                 "outputs and faces are compared with onnxruntime's, and both are timed on the same "
                                 "input.", EPILOG_WIDTH, initial_indent="  ", subsequent_indent="  ")]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ..demo import MODEL_KEYS, BUNDLED_MODELS, DemoSettings, resolve_device, run_model

    console = make_console()
    settings = DemoSettings(device=args.device, iterations=args.iterations)
    titles = {model.key: model.title for model in BUNDLED_MODELS}
    for key in MODEL_KEYS if args.model == "all" else (args.model,):
        console.print(f"\n{titles[key]}: importing, building for {resolve_device(settings.device)}, running, "
                      f"timing {settings.iterations} executions ...")
        report = run_model(key, settings)
        console.print(results_table(report))
        console.print(optimizations_table(report.run.optimizations, report.run.parse_seconds))
        console.print(latency_table(report))
    return 0


def results_table(report) -> Table:
    run = report.run
    shape = "x".join(str(d) for d in run.input_shape)
    return key_value_table(f"{run.model.title} on {run.target}", [
        ("model", ", ".join(path.name for path in run.model.files)), ("input", f"{shape} ({run.model.data})"),
        *report.summary_rows()])


def optimizations_table(optimizations, parse_seconds: float) -> Table:
    rewrites = "\n".join(f"{name} x{count}" for name, count in optimizations.rewrites) or "none"
    tactics = "\n".join(f"{tactic} x{count}" for tactic, count in optimizations.tactics)
    return key_value_table("optimizations applied", [
        ("layers", f"{optimizations.layers_before} imported -> {optimizations.steps_after} engine steps "
                   f"({optimizations.fused_steps} of them fused from several layers)"),
        ("rewrites (pass.rewrite)", rewrites), ("kernels (tactics)", tactics),
        ("import, build", f"{parse_seconds:.2f} s, {optimizations.build_seconds:.2f} s")])


def latency_table(report) -> Table:
    figures = [report.run.latency, *([report.peer_latency] if getattr(report, "peer_latency", None) else [])]
    batch = report.run.latency.batch
    table = Table(title=f"latency and throughput (batch {batch}, numpy in and out, after warm-up)",
                  title_justify="left")
    for column in ("runtime", "median ms", "p90 ms", "items/s", "median vs tensorkiln"):
        table.add_column(column, justify="left" if column == "runtime" else "right")
    for latency in figures:
        ratio = latency.median_ms / report.run.latency.median_ms
        table.add_row(latency.runtime, f"{latency.median_ms:.3f}", f"{latency.p90_ms:.3f}",
                      f"{latency.items_per_second:,.0f}", f"{ratio:.2f}x")
    return table
