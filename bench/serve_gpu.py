"""`kiln serve` on a GPU (issue 22): dynamic batching against batching off, and the serving overhead at concurrency 1.

    python bench/serve_gpu.py --out DIR [--seconds 15] [--concurrency 64] [--clients 8]
    python bench/serve_gpu.py --smoke --out DIR          # the same harness on the CPU with small models

1. Throughput: torchvision ResNet-50 (random weights, batch norms randomized) exported to ONNX with a dynamic batch,
   built FP16 for CUDA into one engine with a batch profile 1..64 (opt 64), written as model.engine of two models
   of one repository: `resnet50_batched` (dynamic_batching, preferred 64, 2 instances) and `resnet50_unbatched` (the
   same config without dynamic_batching: each request runs alone). One `kiln serve` process on loopback; client
   processes (--clients) drive it with tritonclient's gRPC asyncio client, binary tensors (raw_input_contents), one
   1x3x224x224 image per request, --concurrency requests in flight in all, for --seconds each. Target: batched >=
   5x unbatched.
2. Overhead: UltraFace RFB-320 ($TENSORKILN_SHARED/models/onnx/ultraface/version-RFB-320.onnx), a fixed-shape FP16
   CUDA engine served as it is; p50 of a direct `execute` of that engine file in this process (numpy in and out,
   as the server runs it) against the p50 of a tritonclient request at concurrency 1 (gRPC, and HTTP with binary
   data). Target: overhead (served p50 - direct p50) <= 0.3 ms.

Every served answer checked against direct execution first (max abs difference recorded). The results go to
DIR/serve_gpu.json, rewritten after each step; the server's output to DIR/server.log.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCHED_CONFIG = """
max_batch_size: {max_batch}
dynamic_batching {{ preferred_batch_size: [{max_batch}] max_queue_delay_microseconds: {delay_us}
                   default_queue_policy {{ max_queue_size: 4096 }} }}
instance_group [{{ count: {instances} }}]
"""
UNBATCHED_CONFIG = """
max_batch_size: {max_batch}
instance_group [{{ count: {instances} }}]
"""


class Results:
    def __init__(self, out: Path, settings: dict, name: str = "serve_gpu.json"):
        self.path = out / name
        self.data = {"settings": settings}
        self.save()

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.save()
        print(f"{key}: {json.dumps(value)}", flush=True)

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1))


# ---- models ------------------------------------------------------------------------------------------------------
def export_resnet(path: Path, smoke: bool, size: int) -> None:
    import torch

    try:
        import torchvision
        model = torchvision.models.resnet18() if smoke else torchvision.models.resnet50()
    except ImportError:
        if not smoke:
            raise SystemExit("bench/serve_gpu.py needs torchvision for ResNet-50: pip install torchvision")
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                    torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten(), torch.nn.Linear(32, 10))
    sys.path.insert(0, str(ROOT / "bench"))
    from models import randomize_batchnorm

    randomize_batchnorm(model)
    model.eval()
    example = torch.randn(1, 3, size, size)
    torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                      opset_version=17, dynamo=False, dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def build_engines(folder: Path, device: str, smoke: bool, size: int, max_batch: int, ultraface: Path):
    """(the ResNet engine file with a batch profile, the UltraFace fixed-shape engine file)."""
    from tensorkiln.builder import Builder, BuilderConfig, Target
    from tensorkiln.importers.onnx import parse_onnx
    from tensorkiln.plan.profiles import profiles_from_shape_specs
    from tensorkiln.profile_builder import ModelSource, build_with_profiles
    from tensorkiln.quant.precision import Precision

    precision = Precision.FP16 if device == "cuda" else Precision.FP32
    config = BuilderConfig(target=Target(device), precision=precision, timing_cache=str(folder / "timing.cache"))
    onnx_path = folder / "resnet.onnx"
    export_resnet(onnx_path, smoke, size)
    shape = lambda batch: {"image": (batch, 3, size, size)}  # noqa: E731
    [profile] = profiles_from_shape_specs([shape(1)], [shape(max_batch)], [shape(max_batch)])
    started = time.perf_counter()
    resnet = build_with_profiles(ModelSource.from_onnx(onnx_path), [profile], config)
    resnet_file = folder / "resnet.engine"
    resnet.save(resnet_file)
    resnet_s = time.perf_counter() - started
    started = time.perf_counter()
    face = Builder(config).build(parse_onnx(ultraface))
    face_file = folder / "ultraface.engine"
    face.save(face_file)
    return resnet_file, face_file, {"resnet_profiled_s": round(resnet_s, 1),
                                    "ultraface_s": round(time.perf_counter() - started, 1)}


def make_repository(folder: Path, resnet_file: Path, face_file: Path, max_batch: int, instances: int,
                    delay_us: int) -> Path:
    root = folder / "repository"
    for name, config in (("resnet50_batched", BATCHED_CONFIG), ("resnet50_unbatched", UNBATCHED_CONFIG)):
        (root / name / "1").mkdir(parents=True)
        os.symlink(resnet_file, root / name / "1/model.engine")
        (root / name / "config.pbtxt").write_text(config.format(max_batch=max_batch, instances=instances,
                                                                delay_us=delay_us))
    (root / "ultraface/1").mkdir(parents=True)
    os.symlink(face_file, root / "ultraface/1/model.engine")
    return root


# ---- the server --------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, repository: Path, log: Path, threads: int | None, root: Path = ROOT):
        """`root`: the checkout whose tensorkiln serves (another one: a baseline to compare with)."""
        self.http_port, self.grpc_port = free_port(), free_port()
        command = [sys.executable, "-m", "tensorkiln.cli.main", "serve", str(repository),
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), "--metrics-port", "0"]
        if threads:
            command[4:4] = ["--threads", str(threads)]
        self.log = open(log, "w")
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=root)
        self.http_url, self.grpc_url = f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, models: list[str], timeout: float = 240) -> float:
        import tritonclient.http as httpclient

        started = time.perf_counter()
        client = httpclient.InferenceServerClient(self.http_url)
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"kiln serve exited {self.process.returncode}; see {self.log.name}")
            try:
                if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                    return time.perf_counter() - started
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        raise SystemExit(f"kiln serve did not become ready in {timeout} s; see {self.log.name}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        return self.process.returncode


# ---- clients -----------------------------------------------------------------------------------------------------
def _grpc_input(name: str, x: np.ndarray):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def _client_process(url: str, model: str, concurrency: int, start_at: float, seconds: float, shape: tuple,
                    input_name: str, queue):
    """One load process: `concurrency` requests in flight from start_at for `seconds`, each an FP32 input of
    `shape`; puts (count, errors, latencies in ms) on `queue`."""
    import tritonclient.grpc.aio as grpc_aio

    x = np.random.default_rng(os.getpid()).standard_normal(shape, dtype=np.float32)
    inputs = [_grpc_input(input_name, x)]

    async def run():
        client = grpc_aio.InferenceServerClient(url)
        latencies, errors = [], []
        end = start_at + seconds

        async def task():
            while time.time() < end:
                sent = time.perf_counter()
                try:
                    await client.infer(model, inputs)
                except Exception as error:
                    errors.append(str(error)[:200])
                    continue
                if time.time() <= end:
                    latencies.append((time.perf_counter() - sent) * 1e3)

        await client.infer(model, inputs)  # connected and warm before the clock starts
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(task() for _ in range(concurrency)))
        await client.close()
        return latencies, errors

    latencies, errors = asyncio.run(run())
    queue.put((len(latencies), errors[:3], len(errors), latencies))


def throughput(url: str, model: str, concurrency: int, clients: int, seconds: float, shape: tuple,
               input_name: str = "image") -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + 5.0  # the processes start, connect and warm up first
    per_client = [concurrency // clients + (1 if i < concurrency % clients else 0) for i in range(clients)]
    processes = [context.Process(target=_client_process,
                                 args=(url, model, n, start_at, seconds, shape, input_name, queue))
                 for n in per_client if n]
    for process in processes:
        process.start()
    results = [queue.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join(30)
    latencies = sorted(latency for *_, found in results for latency in found)
    count = sum(r[0] for r in results)
    return {"model": model, "concurrency": concurrency, "client_processes": len(processes), "seconds": seconds,
            "requests": count, "inferences_per_s": round(count / seconds, 1),
            "p50_ms": round(_percentile(latencies, 50), 3), "p99_ms": round(_percentile(latencies, 99), 3),
            "errors": sum(r[2] for r in results), "error_examples": [e for r in results for e in r[1]][:3]}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def latency_p50(fn, warmup: int, runs: int) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e3)
    return {"p50_ms": round(statistics.median(samples), 4), "p90_ms": round(_percentile(samples, 90), 4),
            "runs": runs}


def batch_stats(http_url: str, model: str) -> dict:
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(http_url).get_inference_statistics(model)["model_stats"][0]
    batches = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in stats["batch_stats"]}
    executions = stats["execution_count"]
    return {"executions": executions, "inferences": stats["inference_count"],
            "mean_batch": round(stats["inference_count"] / executions, 2) if executions else 0,
            "batch_sizes": dict(sorted(batches.items()))}


def check_answers(server: Server, resnet_file: Path, face_file: Path, size: int) -> dict:
    """Served answers against direct execution of the same engine files (the batched model runs one request alone
    at batch 1 here, as the direct execution does)."""
    import tritonclient.grpc as grpcclient

    from tensorkiln.runtime import Runtime

    client = grpcclient.InferenceServerClient(server.grpc_url)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    found = {}
    resnet = Runtime().load(resnet_file).create_execution_context()
    direct = resnet.execute({"image": x})["logits"]
    for model in ("resnet50_batched", "resnet50_unbatched"):
        served = client.infer(model, [_grpc_input("image", x)]).as_numpy("logits")
        found[model] = float(np.abs(served - direct).max())
    face_input = rng.random((1, 3, 240, 320), dtype=np.float32)
    face = Runtime().load(face_file).create_execution_context()
    direct_face = face.execute({"input": face_input})
    served_face = client.infer("ultraface", [_grpc_input("input", face_input)])
    found["ultraface"] = max(float(np.abs(served_face.as_numpy(n) - direct_face[n]).max()) for n in direct_face)
    return {"max_abs_difference": found}


def overhead(server: Server, face_file: Path, warmup: int, runs: int) -> dict:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from tensorkiln.runtime import Runtime

    x = np.random.default_rng(1).random((1, 3, 240, 320), dtype=np.float32)
    context = Runtime().load(face_file).create_execution_context()
    direct = latency_p50(lambda: context.execute({"input": x}), warmup, runs)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    grpc_inputs = [_grpc_input("input", x)]
    http = httpclient.InferenceServerClient(server.http_url)
    http_input = httpclient.InferInput("input", list(x.shape), "FP32")
    http_input.set_data_from_numpy(x, binary_data=True)
    http_outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("scores", "boxes")]
    served_grpc = latency_p50(lambda: grpc.infer("ultraface", grpc_inputs), warmup, runs)
    served_http = latency_p50(lambda: http.infer("ultraface", [http_input], outputs=http_outputs), warmup, runs)
    direct_again = latency_p50(lambda: context.execute({"input": x}), warmup, runs)  # the GPU's clocks may drift
    base = min(direct["p50_ms"], direct_again["p50_ms"])
    return {"direct_execute": direct, "direct_execute_after": direct_again, "served_grpc": served_grpc,
            "served_http_binary": served_http,
            "overhead_grpc_ms": round(served_grpc["p50_ms"] - base, 4),
            "overhead_http_ms": round(served_http["p50_ms"] - base, 4), "target_ms": 0.3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="small models on the CPU, short runs")
    parser.add_argument("--seconds", type=float, default=None, help="each throughput run (default 15, smoke 2)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8, help="client processes sharing the concurrency")
    parser.add_argument("--instances", type=int, default=2, help="instance_group count of the ResNet models")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads (CPU kernels)")
    parser.add_argument("--shared", type=Path,
                        default=Path(os.environ.get("TENSORKILN_SHARED", ROOT.parent / "shared")))
    args = parser.parse_args(argv)
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --smoke to try the harness on the CPU")
    seconds = args.seconds or (2.0 if smoke else 15.0)
    size, max_batch = (64, 8) if smoke else (224, 64)
    concurrency = min(args.concurrency, 16) if smoke else args.concurrency
    clients = min(args.clients, 2) if smoke else args.clients
    ultraface = args.shared / "models/onnx/ultraface/version-RFB-320.onnx"
    if not ultraface.exists():
        raise SystemExit(f"{ultraface} not found; give --shared or set TENSORKILN_SHARED")
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out, {"device": device, "smoke": smoke, "image": size, "max_batch_size": max_batch,
                                 "concurrency": concurrency, "client_processes": clients, "seconds": seconds,
                                 "instances": args.instances, "max_queue_delay_us": args.max_queue_delay_us})
    if device == "cuda":
        import torch
        results.put("gpu", torch.cuda.get_device_name())
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="kiln-serve-gpu-"))
    resnet_file, face_file, build = build_engines(folder, device, smoke, size, max_batch, ultraface)
    results.put("build_s", build)
    repository = make_repository(folder, resnet_file, face_file, max_batch, args.instances, args.max_queue_delay_us)
    server = Server(repository, args.out / "server.log", args.threads)
    try:
        models = ["resnet50_batched", "resnet50_unbatched", "ultraface"]
        results.put("server_ready_s", round(server.wait_ready(models), 1))
        results.put("answers", check_answers(server, resnet_file, face_file, size))
        runs = (20, 200) if smoke else (200, 2000)
        results.put("overhead_concurrency_1", overhead(server, face_file, *runs))
        for model in ("resnet50_unbatched", "resnet50_batched"):
            measured = throughput(server.grpc_url, model, concurrency, clients, seconds, (1, 3, size, size))
            measured["batches"] = batch_stats(server.http_url, model)
            results.put(f"throughput_{model}", measured)
        speedup = (results.data["throughput_resnet50_batched"]["inferences_per_s"]
                   / results.data["throughput_resnet50_unbatched"]["inferences_per_s"])
        results.put("batched_over_unbatched", {"ratio": round(speedup, 2), "target": 5.0})
    finally:
        results.put("server_exit_code", server.stop())
        results.put("total_s", round(time.perf_counter() - started, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
