"""`kiln bench`: throughput and latency of an engine, measured like trtexec (warm-up, then timed runs).

Each timed run is one `ExecutionContext.execute` on random inputs (never zeros), timed with
time.perf_counter; `execute` returns only once the device is done. On the CPU the inputs and outputs are numpy
arrays. On CUDA the inputs stay on the device by default, bound to the context where they lie (like trtexec's
device buffers), so that the figures are the engine's rather than those of host<->device copies of pageable numpy
memory, which can cost far more than the engine itself; --host-io times numpy in and numpy out, copies included.
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from .. import __version__
from ..cpu_threads import threads as cpu_threads
from .display import key_value_table, make_console, target_description, warn
from .profile_args import concrete_engine
from .inputs import (add_input_arguments, add_memory_budget_argument, make_feed, non_negative_float, non_negative_int,
                     positive_int)

# Without --iterations or --duration, run at least this many iterations and at least this long (trtexec's
# defaults); the warm-up lasts DEFAULT_WARMUP_MS unless --warmup or --warmup-ms says otherwise.
DEFAULT_ITERATIONS = 10
DEFAULT_DURATION_S = 3.0
DEFAULT_WARMUP_MS = 200.0
MAX_PROFILE_RUNS = 100
PERCENTILES = (90, 95, 99)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure an engine's throughput and latency",
        description="Warm up, then time executions of an engine on random inputs and print throughput and "
                    "latency percentiles (like trtexec). Timing stops once both --iterations and --duration "
                    f"are reached; with neither, at least {DEFAULT_ITERATIONS} iterations and "
                    f"{DEFAULT_DURATION_S:g} s.")
    parser.add_argument("engine", metavar="ENGINE", help="the engine file (made by `kiln build`)")
    add_input_arguments(parser)
    add_memory_budget_argument(parser)
    warmup = parser.add_mutually_exclusive_group()
    warmup.add_argument("--warmup", type=non_negative_int, metavar="N",
                        help="warm up with N untimed executions")
    warmup.add_argument("--warmup-ms", "--warmUp", dest="warmup_ms", type=non_negative_float, metavar="MS",
                        help=f"warm up for MS milliseconds of untimed executions (default: {DEFAULT_WARMUP_MS:g})")
    parser.add_argument("--iterations", type=positive_int, metavar="N", help="time at least N executions")
    parser.add_argument("--duration", type=non_negative_float, metavar="SECONDS",
                        help="time executions for at least SECONDS")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads of the kernels (torch.set_num_threads; default: PyTorch's choice)")
    parser.add_argument("--host-io", action="store_true",
                        help="on CUDA, time numpy inputs and outputs, their host<->device copies included (default: "
                             "inputs and outputs stay on the device); the CPU target always uses numpy")
    parser.add_argument("--json", metavar="FILE.json", help="also write the figures to FILE.json")
    parser.add_argument("--dump-profile", action="store_true",
                        help="also time every layer (on CUDA inside a CUDA graph, on the CPU by eager runs) and "
                             "print a table")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the per-layer times of --dump-profile (which it implies) as a bar chart (PNG; "
                             "needs Pillow)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from ..runtime import Runtime

    console = make_console()
    args.dump_profile = args.dump_profile or bool(args.plot)
    engine = concrete_engine(Runtime().load(args.engine), args)  # engines with profiles: --shapes, --profile
    feed, _ = make_feed(engine.inputs, args.inputs, args.seed, args.limits)
    io = "host" if args.host_io or engine.device.type == "cpu" else "device"
    if args.host_io and engine.device.type == "cpu":
        warn("--host-io does nothing for a CPU engine, whose inputs and outputs are always numpy on the host")
    if io == "device":
        feed = _on_device(feed, engine.device)
    context = engine.create_execution_context(limits=args.limits)
    run = functools.partial(context.execute, feed)
    if io == "device":
        for name, value in feed.items():
            context.set_input_tensor(name, value)
        run = context.execute
    min_iterations, min_seconds = _run_length(args)
    with cpu_threads(args.threads) as threads:
        warmup_runs = _warm_up(run, args.warmup, args.warmup_ms)
        latencies, total_seconds = _measure(run, min_iterations, min_seconds)
        profile = context.profile(feed, runs=min(len(latencies), MAX_PROFILE_RUNS)) if args.dump_profile else None

    batch = engine.inputs[0].shape[0] if engine.inputs and engine.inputs[0].shape else 1
    figures = summarize(latencies, total_seconds, batch)
    figures.update(engine=str(args.engine), target=engine.plan.target, device=target_description(engine.plan),
                   precision=engine.plan.precision, threads=threads, warmup_iterations=warmup_runs, io=io,
                   tensorkiln_version=__version__)
    console.print(summary_table(figures))
    if profile is not None:
        figures["profile"] = [{"name": name, "kind": kind, "tactic": tactic, "median_ms": seconds * 1000}
                              for name, kind, tactic, seconds in profile]
        console.print(profile_table(figures["profile"], on_gpu=engine.device.type == "cuda"))
        if args.plot:
            from ..tools.plot_profile import plot_profile

            plot_profile(figures["profile"], args.plot, title=f"{engine.plan.network_name} ({figures['device']})")
            console.print(f"per-layer times drawn to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        console.print(f"figures written to {args.json}")
    return 0


def _on_device(feed: dict, device) -> dict:
    """The feed as torch tensors on `device`, copied there once, before any timing."""
    import torch

    return {name: (value if isinstance(value, torch.Tensor) else torch.from_numpy(value)).to(device)
            for name, value in feed.items()}


def _run_length(args: argparse.Namespace) -> tuple[int, float]:
    """(minimum iterations, minimum seconds) of the timed phase; it stops once both are reached."""
    if args.iterations is None and args.duration is None:
        return DEFAULT_ITERATIONS, DEFAULT_DURATION_S
    return args.iterations or 1, args.duration or 0.0


def _warm_up(run, runs: int | None, milliseconds: float | None) -> int:
    """Untimed executions `run()` (first-use setup, caches, CUDA graph capture); returns how many ran."""
    if runs is not None:
        for _ in range(runs):
            run()
        return runs
    budget = (DEFAULT_WARMUP_MS if milliseconds is None else milliseconds) / 1000
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < budget:
        run()
        count += 1
    return count


def _measure(run, min_iterations: int, min_seconds: float) -> tuple[np.ndarray, float]:
    """Latency of each timed execution `run()` (seconds) and the wall time of the whole timed phase."""
    latencies: list[float] = []
    start = time.perf_counter()
    while len(latencies) < min_iterations or time.perf_counter() - start < min_seconds:
        begin = time.perf_counter()
        run()
        latencies.append(time.perf_counter() - begin)
    return np.array(latencies), time.perf_counter() - start


def summarize(latencies: np.ndarray, total_seconds: float, batch: int) -> dict:
    """Throughput (per second of the timed phase) and latency statistics in milliseconds."""
    ms = latencies * 1000
    latency = {"min": ms.min(), "mean": ms.mean(), "median": np.median(ms)}
    latency.update({f"p{p}": np.percentile(ms, p) for p in PERCENTILES})
    latency.update(max=ms.max(), std=ms.std())
    return {
        "iterations": int(len(latencies)), "total_seconds": float(total_seconds), "batch": int(batch),
        "throughput_inferences_per_second": len(latencies) / total_seconds,
        "throughput_items_per_second": len(latencies) * batch / total_seconds,
        "latency_ms": {key: float(value) for key, value in latency.items()},
    }


def summary_table(figures: dict) -> Table:
    latency = figures["latency_ms"]
    return key_value_table("performance summary", [
        ("engine", figures["engine"]), ("target", figures["device"]), ("precision", figures["precision"]),
        ("threads", figures["threads"]),
        ("inputs/outputs", "numpy on the host (copies timed)" if figures["io"] == "host"
         else "bound on the device (host copies not timed; --host-io times them)"),
        ("throughput", f"{figures['throughput_inferences_per_second']:.2f} inferences/s, "
                       f"{figures['throughput_items_per_second']:.2f} items/s (batch {figures['batch']})"),
        ("latency (ms)", ", ".join(f"{key} {value:.4f}" for key, value in latency.items() if key != "std")),
        ("latency std (ms)", f"{latency['std']:.4f}"),
        ("timed iterations", figures["iterations"]),
        ("total time", f"{figures['total_seconds']:.3f} s (after {figures['warmup_iterations']} warm-up runs)"),
    ])


def profile_table(profile: list[dict], on_gpu: bool) -> Table:
    total = sum(entry["median_ms"] for entry in profile) or 1.0
    how = "each layer timed inside a CUDA graph" if on_gpu else "eager runs, each layer timed on its own"
    table = Table(title=f"per-layer profile (medians; {how})", title_justify="left")
    for column in ("#", "layer", "kind", "tactic", "median ms", "%"):
        table.add_column(column, justify="right" if column in ("#", "median ms", "%") else "left")
    for index, entry in enumerate(profile):
        table.add_row(str(index), entry["name"], entry["kind"], entry["tactic"], f"{entry['median_ms']:.4f}",
                      f"{100 * entry['median_ms'] / total:.1f}")
    table.add_row("", "total", "", "", f"{sum(e['median_ms'] for e in profile):.4f}", "100.0")
    return table
