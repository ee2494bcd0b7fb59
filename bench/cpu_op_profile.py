"""Per-op-kind CPU time: tensorkiln's static program step by step against onnxruntime's own profile (issue 24).

    python bench/cpu_op_profile.py --model silero_vad [--runs 200] [--threads 2] [--top 15]

tensorkiln: each step of the context's static program is timed (perf_counter around its call, the program run
`--runs` times, the median per step); onnxruntime: `SessionOptions.enable_profiling`, the median `dur` per node over
the same number of runs. Both are summed per op kind (tensorkiln's step tactic, onnxruntime's op type) and listed with
the slowest steps of each, in microseconds. The timer around each step adds about 1 us per step to tensorkiln's sum.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorkiln as tk  # noqa: E402  (before torch: idle OpenMP threads sleep)
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_suite import MODELS, build_engine, fixed_inputs, make_feed, onnx_file, ort_session  # noqa: E402


def tensorkiln_steps(engine_file: Path, feed: dict, runs: int) -> list[tuple[str, str, float]]:
    """(step name, tactic, median us) per step of the static program."""
    context = tk.Runtime().load(engine_file).create_execution_context()
    context.execute(feed)
    executor = context._static  # noqa: SLF001  (a bench looks inside)
    steps = context.engine.plan.steps
    samples: list[list[float]] = [[] for _ in steps]
    program = executor._program

    def timed(index, call):
        def wrapper(args):
            start = time.perf_counter()
            result = call(args)
            samples[index].append(time.perf_counter() - start)
            return result
        return wrapper

    executor._program = tuple((timed(i, entry[0]), *entry[1:]) for i, entry in enumerate(program))
    executor._programs[executor._program_threads] = executor._program
    for _ in range(runs):
        context.execute(feed)
    return [(step.name, step.tactic, statistics.median(s) * 1e6) for step, s in zip(steps, samples)]


def ort_nodes(model: Path, name: str, feed: dict, threads: int, runs: int) -> list[tuple[str, str, float]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    full = {**feed, **fixed_inputs(name)}
    for _ in range(runs):
        session.run(None, full)
    events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = collections.defaultdict(list)
    kinds = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"][:-len("_kernel_time")]
            durations[node].append(event["dur"])
            kinds[node] = event["args"].get("op_name", "?")
    return [(node, kinds[node], statistics.median(d)) for node, d in durations.items()]


def summary(title: str, rows: list[tuple[str, str, float]], top: int) -> None:
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    for _, kind, us in rows:
        by_kind[kind].append(us)
    total = sum(us for _, _, us in rows)
    print(f"\n## {title}: {len(rows)} steps, sum of medians {total:.0f} us")
    for kind, values in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {kind:55s} n={len(values):3d} {sum(values):9.1f} us")
    print("  slowest:")
    for node, kind, us in sorted(rows, key=lambda r: -r[2])[:top]:
        print(f"    {us:9.1f} us  {kind:40s} {node}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="tensorkiln-op-profile-"))
    model, engine_file = onnx_file(args.model, folder), folder / "model.engine"
    build_engine(args.model, model, engine_file)
    feed = make_feed(args.model)
    summary("tensorkiln", tensorkiln_steps(engine_file, feed, args.runs), args.top)
    summary("onnxruntime", ort_nodes(model, args.model, feed, args.threads, args.runs), args.top)


if __name__ == "__main__":
    main()
