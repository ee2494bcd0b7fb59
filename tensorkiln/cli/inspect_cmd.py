"""`kiln inspect`: what an engine file holds (I/O, target, precision, versions, sizes, build info, layers).

It reads the plan without creating an Engine, so a CUDA engine can be inspected on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from .. import __version__
from ..errors import EngineFormatError
from .display import format_bytes, format_shape, io_table, key_value_table, make_console, target_description


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show what an engine file holds",
        description="Print an engine's inputs and outputs, target, precision, versions, sizes and build info; "
                    "with --layers also every layer with its kernel (tactic) and tensor shapes.")
    parser.add_argument("engine", metavar="ENGINE", help="the engine file (made by `kiln build`)")
    parser.add_argument("--layers", action="store_true",
                        help="also list every layer: name, kind, tactic, precision, input and output shapes")
    parser.add_argument("--graph", metavar="FILE.svg",
                        help="also draw the engine's layers (fused groups, precisions, tactics, tensor sizes) as SVG")
    parser.add_argument("--json", action="store_true",
                        help="print the engine's description as JSON (file, versions, sizes, the plan with every "
                             "step) instead of tables, for tools")
    parser.set_defaults(handler=main)


def _read(blob: bytes, source: str, console):
    """The plan and weights to show: the engine's, or for an engine with optimization profiles (whose profiles are
    printed first) those of profile 0's opt shapes."""
    from ..plan.file_format import deserialize
    from ..plan.profile_file import is_profiled, read_profiled
    from .profile_args import profiles_table

    if not is_profiled(blob, source):
        return deserialize(blob, source)
    contents = read_profiled(blob, source)
    console.print(profiles_table(contents.profiles, [(p, s, plan) for p, s, plan, _ in contents.variants]))
    _, _, plan, weights = contents.variants[0]
    return plan, weights


def main(args: argparse.Namespace) -> int:
    from safetensors import safe_open

    console = make_console()
    console.quiet = args.json  # --json: stdout holds the JSON alone
    path = Path(args.engine)
    if not path.is_file():
        raise EngineFormatError(f"engine file {str(path)!r} does not exist")
    plan, weights = _read(path.read_bytes(), f"engine file {str(path)!r}", console)  # validates the file
    with safe_open(path, framework="pt") as container:
        metadata = container.metadata() or {}

    weights_nbytes = sum(t.numel() * t.element_size() for t in weights.values())
    if args.graph:
        from ..tools.draw_engine import engine_svg

        Path(args.graph).write_text(engine_svg(plan), encoding="utf-8")
    if args.json:
        print(json.dumps({"file": str(path), "file_bytes": path.stat().st_size,
                          "format_version": metadata.get("format_version"),
                          "tensorkiln_version": metadata.get("tensorkiln_version"), "weights_bytes": weights_nbytes,
                          "plan": plan.to_json()}, indent=1))
        return 0
    info = plan.build_info
    console.print(key_value_table("engine", [
        ("file", f"{path} ({format_bytes(path.stat().st_size)})"), ("network", plan.network_name),
        ("target", target_description(plan)), ("precision", plan.precision),
        ("format version", metadata.get("format_version", "?")),
        ("tensorkiln version", f"{metadata.get('tensorkiln_version', '?')} (this is {__version__})"),
        ("layers", f"{len(plan.steps)} (from {info.get('layers_before', '?')} before optimization)"),
        ("weights", f"{format_bytes(weights_nbytes)} in {len(weights)} tensors"),
        ("activations", f"{format_bytes(sum(t.nbytes for t in plan.tensors))} in {len(plan.tensors)} tensors"
                        + (f", {format_bytes(plan.memory.arena_bytes)} arena" if plan.memory else "")),
        ("build time", f"{info['build_seconds']} s" if "build_seconds" in info else "?"),
    ]))
    if plan.memory is not None:
        console.print(memory_figure(plan.memory))
    console.print(io_table(plan))
    if info.get("passes"):
        console.print(passes_table(info["passes"]))
    if args.layers:
        console.print(layers_table(plan))
    if args.graph:
        console.print(f"engine drawn to {args.graph}")
    return 0


def memory_figure(memory) -> str:
    """The memory plan in one line, as the builder's log states it: the arena next to the sum of the activations
    it holds (each as if it had its own buffer)."""
    share = 100 * memory.arena_bytes / max(memory.activation_bytes, 1)
    return (f"activation memory: arena {memory.arena_bytes / 2**20:.2f} MiB for "
            f"{memory.activation_bytes / 2**20:.2f} MiB of activations ({share:.0f}%)")


def passes_table(passes: list[dict]) -> Table:
    table = Table(title="build passes", title_justify="left")
    for column in ("pass", "ms", "rewrites"):
        table.add_column(column, justify="right" if column == "ms" else "left")
    for record in passes:
        counts = ", ".join(f"{k}={v}" for k, v in record.get("counts", {}).items()) or "no change"
        table.add_row(record["name"], f"{record.get('seconds', 0) * 1000:.1f}", counts)
    return table


def layers_table(plan) -> Table:
    """Every step in execution order, with the shapes of the tensors it reads and writes."""
    specs = {spec.name: spec for spec in (*plan.inputs, *plan.weights, *plan.tensors, *plan.outputs)}
    fused = any(step.fused_from for step in plan.steps)
    table = Table(title=f"layers ({len(plan.steps)})", title_justify="left")
    for column in ("#", "name", "kind", "tactic", "precision", "inputs", "outputs", *(["fused from"] * fused)):
        # a tactic id is one word to copy (e.g. into --tacticHints): never broken over lines
        table.add_column(column, justify="right" if column == "#" else "left", no_wrap=column == "tactic")
    for index, step in enumerate(plan.steps):
        row = [str(index), step.name, step.kind, step.tactic, step.precision or plan.precision,
               _tensors(step.inputs, specs), _tensors(step.outputs, specs)]
        if fused:
            row.append(", ".join(step.fused_from))
        table.add_row(*row)
    return table


def _tensors(names, specs: dict) -> str:
    lines = []
    for name in names:
        if name is None:  # an optional input left out
            continue
        spec = specs.get(name)
        lines.append(f"{name} {format_shape(spec.shape)} {spec.dtype.value}" if spec else name)
    return "\n".join(lines)
