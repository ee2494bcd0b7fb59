"""`kiln serve` host overhead on the CPU (issue 22): what the server adds to a request, with a trivial model so that
the engine's time is negligible and what is measured is the server's own work.

    python bench/serve_overhead.py --out DIR [--runs 300] [--rounds 5] [--seconds 4] [--concurrency 16,64]

Models (y = relu(x), one layer, FP32 on the CPU), in two payload sizes: `small` (x: 1x4) and `image` (x:
1x3x224x224, a ResNet-50 input, 602 KB):

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
MAX_BATCH = 64


def write_relu(path: Path, row_shape: tuple[int, ...], batch) -> None:
    import onnx
    from onnx import TensorProto, helper

    shape = [batch, *row_shape]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def make_repository(folder: Path) -> tuple[Path, dict[str, Path]]:
    """(the repository, {size: its fixed-shape engine file})."""
    from tensorkiln.builder import Builder, BuilderConfig
    from tensorkiln.importers.onnx import parse_onnx

    root = folder / "repository"
    engines = {}
    for size, row_shape in SHAPES.items():
        onnx_path = folder / f"{size}.onnx"
        write_relu(onnx_path, row_shape, 1)
        engines[size] = folder / f"{size}.engine"
        Builder(BuilderConfig()).build(parse_onnx(onnx_path)).save(engines[size])
        (root / f"{size}_fixed/1").mkdir(parents=True)
        (root / f"{size}_fixed/1/model.engine").symlink_to(engines[size])
        for kind, config in (("batched", BATCHED_CONFIG), ("unbatched", UNBATCHED_CONFIG)):
            model = root / f"{size}_{kind}"
            (model / "1").mkdir(parents=True)
            write_relu(model / "1/model.onnx", row_shape, "batch")
            (model / "config.pbtxt").write_text(config.format(max_batch=MAX_BATCH, instances=2, delay_us=2000))
    return root, engines


def _clients(server: Server, size: str):
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

    return {"http_binary": send_http, "grpc": send_grpc}


def overhead(server: Server, size: str, engine_file: Path, runs: int, rounds: int) -> dict:
    from tensorkiln.runtime import Runtime

    x = np.random.default_rng(0).standard_normal((1, *SHAPES[size]), dtype=np.float32)
    context = Runtime().load(engine_file).create_execution_context()
    modes = {"direct_execute": lambda x: context.execute({"x": x})["y"], **_clients(server, size)}
    for mode, send in modes.items():
        answer = send(x)
        if not np.array_equal(answer, np.maximum(x, 0)):
            raise SystemExit(f"{size}: {mode} answered wrong values")
        for _ in range(runs // 10):  # warm up
            send(x)
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, send in modes.items():
            for _ in range(runs):
                started = time.perf_counter_ns()
                send(x)
                samples[mode].append((time.perf_counter_ns() - started) / 1e6)
    found = {mode: {"p50_ms": round(statistics.median(values), 4),
                    "p90_ms": round(float(np.percentile(values, 90)), 4), "runs": len(values)}
             for mode, values in samples.items()}
    base = found["direct_execute"]["p50_ms"]
    for mode in ("http_binary", "grpc"):
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
    args = parser.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    levels = [int(c) for c in args.concurrency.split(",") if c]
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out, {"device": "cpu", "runs": args.runs, "rounds": args.rounds, "seconds": args.seconds,
                                 "concurrency": levels, "client_processes": args.clients, "sizes": sizes})
    root, engines = make_repository(Path(tempfile.mkdtemp(prefix="kiln-serve-overhead-")))
    server = Server(root, args.out / "server.log", threads=1)
    try:
        models = [f"{size}_{kind}" for size in sizes for kind in ("fixed", "batched", "unbatched")]
        results.put("server_ready_s", round(server.wait_ready(models), 1))
        for size in sizes:
            results.put(f"overhead_{size}", overhead(server, size, engines[size], args.runs, args.rounds))
        for size in sizes:
            for concurrency in levels:
                for kind in ("unbatched", "batched"):
                    model = f"{size}_{kind}"
                    before = batch_stats(server.http_url, model)
                    measured = throughput(server.grpc_url, model, concurrency, args.clients, args.seconds,
                                          shape=(1, *SHAPES[size]), input_name="x")
                    after = batch_stats(server.http_url, model)
                    executions = after["executions"] - before["executions"]
                    inferences = after["inferences"] - before["inferences"]
                    measured["mean_batch"] = round(inferences / executions, 2) if executions else 0
                    results.put(f"throughput_{model}_c{concurrency}", measured)
    finally:
        results.put("server_exit_code", server.stop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
