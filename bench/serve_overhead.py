"""`kiln serve` host overhead on the CPU (issue 22): what the server adds to a request, with a trivial model so that
the engine's time is negligible and what is measured is the server's own work.

    python bench/serve_overhead.py --out DIR [--runs 300] [--rounds 5] [--seconds 4] [--concurrency 16,64]
                                   [--baseline CHECKOUT]

--baseline: a second server from another checkout of tensorkiln (for example `git archive <commit> | tar -x -C
DIR`) runs beside this one, on a repository of its own, and every measurement alternates between the two, so that
a before/after comparison shares the machine's noise.

Models of one layer, FP32 on the CPU, in two payload sizes: `small` (y = relu(x), x: 1x4) and `image` (y = the
mean of each channel of x, 1x3x224x224: a ResNet-50 input of 602 KB, an answer of a few bytes):

1. Overhead at concurrency 1: fixed-shape engines (`<size>_fixed`) built here and served as model.engine; p50 of
   a direct `context.execute` of the same engine in this process, against the p50 of tritonclient's sync clients
   (HTTP with binary data in and out, and gRPC with raw contents). The modes alternate over --rounds rounds of
   --runs requests (the machine is shared: alternation spreads its noise over all of them); each p50 is the median
   of all its samples. Overhead = served p50 - direct p50.
2. Throughput at each --concurrency: tritonclient's gRPC asyncio client in --clients processes, one row per
   request, against `<size>_batched` (dynamic batching, preferred 64, 2 instances) and `<size>_unbatched` (the same
   config without dynamic_batching).

Every answer is checked against the reference first. Results: DIR/serve_overhead.json, rewritten after each step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_gpu import BATCHED_CONFIG, UNBATCHED_CONFIG, Results, Server, batch_stats, throughput  # noqa: E402

SHAPES = {"small": (4,), "image": (3, 224, 224)}
OPS = {"small": "Relu", "image": "GlobalAveragePool"}
MAX_BATCH = 64


def write_model(path: Path, size: str, batch) -> None:
    import onnx
    from onnx import TensorProto, helper

    shape = [batch, *SHAPES[size]]
    out_shape = shape if OPS[size] == "Relu" else [batch, shape[1], 1, 1]
    graph = helper.make_graph([helper.make_node(OPS[size], ["x"], ["y"])], size,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_engines(folder: Path) -> dict[str, Path]:
    """{size: a fixed-shape engine file of the model at batch 1}."""
    from tensorkiln.builder import Builder, BuilderConfig
    from tensorkiln.importers.onnx import parse_onnx

    engines = {}
    for size in SHAPES:
        onnx_path = folder / f"{size}.onnx"
        write_model(onnx_path, size, 1)
        engines[size] = folder / f"{size}.engine"
        Builder(BuilderConfig()).build(parse_onnx(onnx_path)).save(engines[size])
    return engines


def make_repository(root: Path, engines: dict[str, Path]) -> Path:
    for size in SHAPES:
        (root / f"{size}_fixed/1").mkdir(parents=True)
        (root / f"{size}_fixed/1/model.engine").symlink_to(engines[size])
        for kind, config in (("batched", BATCHED_CONFIG), ("unbatched", UNBATCHED_CONFIG)):
            model = root / f"{size}_{kind}"
            (model / "1").mkdir(parents=True)
            write_model(model / "1/model.onnx", size, "batch")
            (model / "config.pbtxt").write_text(config.format(max_batch=MAX_BATCH, instances=2, delay_us=2000))
    return root


def _clients(server: Server, size: str, suffix: str = ""):
    """{mode: a function sending x once and returning y}, for tritonclient's sync HTTP (binary) and gRPC."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    model = f"{size}_fixed"
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)

    def send_http(x):
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        wanted = [httpclient.InferRequestedOutput("y", binary_data=True)]
        return http.infer(model, [tensor], outputs=wanted).as_numpy("y")

    def send_grpc(x):
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return grpc.infer(model, [tensor]).as_numpy("y")

    return {f"http_binary{suffix}": send_http, f"grpc{suffix}": send_grpc}


def overhead(servers: dict[str, Server], size: str, engine_file: Path, runs: int, rounds: int) -> dict:
    from tensorkiln.runtime import Runtime

    x = np.random.default_rng(0).standard_normal((1, *SHAPES[size]), dtype=np.float32)
    context = Runtime().load(engine_file).create_execution_context()
    modes = {"direct_execute": lambda x: context.execute({"x": x})["y"]}
    pids = {"direct_execute": None}  # whose CPU time each mode's requests cost (the server's)
    for suffix, server in servers.items():
        clients = _clients(server, size, suffix)
        modes.update(clients)
        pids.update(dict.fromkeys(clients, server.process.pid))
    expected = context.execute({"x": x})["y"]
    for mode, send in modes.items():
        if not np.array_equal(send(x), expected):  # bit for bit: the same engine
            raise SystemExit(f"{size}: {mode} answered other values than a direct execution")
        for _ in range(runs // 10):  # warm up
            send(x)
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu_s = dict.fromkeys(modes, 0.0)
    for _ in range(rounds):
        for mode, send in modes.items():
            cpu_before = _cpu_seconds(pids[mode]) if pids[mode] else 0.0
            for _ in range(runs):
                started = time.perf_counter_ns()
                send(x)
                samples[mode].append((time.perf_counter_ns() - started) / 1e6)
            cpu_s[mode] += _cpu_seconds(pids[mode]) - cpu_before if pids[mode] else 0.0
    found = {mode: {"p50_ms": round(statistics.median(values), 4),
                    "p90_ms": round(float(np.percentile(values, 90)), 4), "runs": len(values),
                    **({"server_cpu_ms_per_request": round(cpu_s[mode] * 1e3 / len(values), 4)} if pids[mode] else {})}
             for mode, values in samples.items()}
    base = found["direct_execute"]["p50_ms"]
    for mode in modes:
        if mode != "direct_execute":
            found[f"overhead_{mode}_ms"] = round(found[mode]["p50_ms"] - base, 4)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=300, help="requests per mode and round at concurrency 1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="each throughput run")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated levels ('' : no throughput runs)")
    parser.add_argument("--clients", type=int, default=1, help="client processes sharing the concurrency")
    parser.add_argument("--sizes", default="small,image", help=f"payloads among {', '.join(SHAPES)}")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's server to compare with")
    args = parser.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    levels = [int(c) for c in args.concurrency.split(",") if c]
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out, {"device": "cpu", "runs": args.runs, "rounds": args.rounds, "seconds": args.seconds,
                                 "concurrency": levels, "client_processes": args.clients, "sizes": sizes},
                      name="serve_overhead.json")
    folder = Path(tempfile.mkdtemp(prefix="kiln-serve-overhead-"))
    engines = build_engines(folder)
    checkouts = {"": ROOT, **({"[baseline]": args.baseline.resolve()} if args.baseline else {})}
    servers = {suffix: Server(make_repository(folder / f"repository{index}", engines),
                              args.out / f"server{suffix}.log", threads=1, root=checkout)
               for index, (suffix, checkout) in enumerate(checkouts.items())}
    try:
        models = [f"{size}_{kind}" for size in sizes for kind in ("fixed", "batched", "unbatched")]
        for suffix, server in servers.items():
            results.put(f"server_ready_s{suffix}", round(server.wait_ready(models), 1))
        for size in sizes:
            results.put(f"overhead_{size}", overhead(servers, size, engines[size], args.runs, args.rounds))
        for size in sizes:
            for concurrency in levels:
                for kind in ("unbatched", "batched"):
                    for suffix, server in servers.items():
                        measured = _throughput(server, f"{size}_{kind}", concurrency, args, SHAPES[size])
                        results.put(f"throughput_{size}_{kind}_c{concurrency}{suffix}", measured)
    finally:
        for suffix, server in servers.items():
            results.put(f"server_exit_code{suffix}", server.stop())
    return 0


def _throughput(server: Server, model: str, concurrency: int, args, row_shape: tuple[int, ...]) -> dict:
    """throughput's figures, the mean batch, and the server's CPU time per request (its own work, which the
    machine's other load does not stretch the way it stretches wall time)."""
    before = batch_stats(server.http_url, model)
    cpu_before = _cpu_seconds(server.process.pid)
    measured = throughput(server.grpc_url, model, concurrency, args.clients, args.seconds, shape=(1, *row_shape),
                          input_name="x")
    cpu_s = _cpu_seconds(server.process.pid) - cpu_before
    after = batch_stats(server.http_url, model)
    executions = after["executions"] - before["executions"]
    inferences = after["inferences"] - before["inferences"]
    measured["mean_batch"] = round(inferences / executions, 2) if executions else 0
    # over every request the run sent, warm-ups and requests past the clock included
    measured["server_cpu_ms_per_request"] = round(cpu_s * 1e3 / inferences, 4) if inferences else None
    return measured


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc), all its threads."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
