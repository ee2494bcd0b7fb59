"""The load test of `kiln serve` (issue 22): tritonclient's async clients (HTTP and gRPC, alternately) send
numbered requests at rising concurrency, with faults injected among them, and every answer is counted by its id.

    python3 bench/serve_load.py [--requests 20000] [--concurrency 1,4,16,64,128,256] [--out load.json]

Starts `kiln serve` on free loopback ports over a repository made here (`affine`: y = relu(2x + 1), batched, two
instances), unless --http-url/--grpc-url point at a running server that has it. Faults:

- malformed requests (every 10th): a wrong shape, a wrong datatype, an unknown input, a body that is not JSON, a
  binary body shorter than its header says. Each must be refused with 400 / INVALID_ARGUMENT (or 503 while the
  model is unloaded), never answered and never a server error;
- disconnects (every 25th): an HTTP client that sends its request and closes the socket at once, a gRPC call
  cancelled right after it starts. Nobody is left to answer; the server must stay healthy;
- an unload midway: at half the requests the model is unloaded and loaded again. Valid requests refused meanwhile
  (503 / UNAVAILABLE, with its retry hint) are sent again after a short pause, as a client honouring Retry-After.

Every other request is valid, with its own input, and must get exactly one answer carrying its id and the right
values: the counts printed are lost (no answer), duplicated (two answers), wrong (another request's values or id)
and server errors (anything but a success or a 503 for a valid request; anything but 400/503 for a malformed one).
At the end the server's statistics must show nothing pending. Exit status 0 only when all of those are 0.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "affine"
AFFINE_CONFIG = """
max_batch_size: 8
input [{ name: "x", data_type: TYPE_FP32, dims: [4] }]
output [{ name: "y", data_type: TYPE_FP32, dims: [4] }]
dynamic_batching { preferred_batch_size: [8] max_queue_delay_microseconds: 500
                   default_queue_policy { max_queue_size: 1024 } }
instance_group [{ count: 2 }]
"""
MALFORMED_EVERY = 10
DISCONNECT_EVERY = 25
RETRY_PAUSE_S = 0.05  # the server's Retry-After is 1 s; a shorter pause keeps the run short and the pressure on
MAX_RETRIES = 200


def write_affine(model_dir: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["doubled"]),
         helper.make_node("Add", ["doubled", "one"], ["shifted"]),
         helper.make_node("Relu", ["shifted"], ["y"])], "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    (model_dir / "1").mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model_dir / "1/model.onnx")
    (model_dir / "config.pbtxt").write_text(AFFINE_CONFIG)


def reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x * np.float32(2) + np.float32(1), np.float32(0))


def request_input(index: int) -> np.ndarray:
    """Request `index`'s own input: 1..3 rows whose values name it, so that a mixed-up answer shows."""
    rows = 1 + index % 3
    return (np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + np.float32(index % 100_000)) / np.float32(7)


@dataclasses.dataclass
class Counts:
    answers: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # valid id -> answers
    valid: int = 0
    valid_ids: set = dataclasses.field(default_factory=set)
    wrong: list = dataclasses.field(default_factory=list)
    server_errors: list = dataclasses.field(default_factory=list)
    malformed: int = 0
    malformed_refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    disconnects: int = 0
    retried: int = 0  # 503 / UNAVAILABLE answers to valid requests, sent again
    unloads: int = 0
    phases: list = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        lost = sum(1 for index in self.valid_ids if self.answers[index] == 0)
        duplicated = sum(1 for n in self.answers.values() if n > 1)
        return {"valid": self.valid, "answered": sum(1 for n in self.answers.values() if n >= 1), "lost": lost,
                "duplicated": duplicated, "wrong": len(self.wrong), "server_errors": len(self.server_errors),
                "malformed": self.malformed, "malformed_refused": dict(self.malformed_refused),
                "disconnects": self.disconnects, "retried_after_503": self.retried, "unloads": self.unloads,
                "phases": self.phases, "examples": (self.wrong + self.server_errors)[:5]}



def _status(error) -> str:
    status = getattr(error, "status", None)
    return str(status() if callable(status) else status)


def _is_unavailable(error) -> bool:
    return _status(error) in ("503", "StatusCode.UNAVAILABLE")


def _is_invalid(error) -> bool:
    return _status(error) in ("400", "StatusCode.INVALID_ARGUMENT")


class Load:
    def __init__(self, http_url: str, grpc_url: str, counts: Counts):
        self.http_url, self.grpc_url, self.counts = http_url, grpc_url, counts
        self.host, self.http_port = http_url.rsplit(":", 1)

    async def run_phase(self, concurrency: int, indices: range, unload_at: int | None) -> None:
        import tritonclient.grpc.aio as grpc_aio
        import tritonclient.http.aio as http_aio

        self.http = http_aio.InferenceServerClient(self.http_url, conn_limit=concurrency + 8)
        self.grpc = grpc_aio.InferenceServerClient(self.grpc_url)
        pending = iter(indices)
        unloader = None
        started = time.perf_counter()

        async def worker():
            nonlocal unloader
            for index in pending:
                if index == unload_at:
                    unloader = asyncio.ensure_future(self.unload_and_load())
                await self.one(index)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            if unloader is not None:
                await unloader
        finally:
            await self.http.close()
            await self.grpc.close()
        seconds = time.perf_counter() - started
        self.counts.phases.append({"concurrency": concurrency, "requests": len(indices), "seconds": round(seconds, 2),
                                   "requests_per_s": round(len(indices) / seconds, 1)})

    async def one(self, index: int) -> None:
        if index % DISCONNECT_EVERY == DISCONNECT_EVERY - 1:
            self.counts.disconnects += 1
            await (self.disconnect_http(index) if index % 2 else self.cancel_grpc(index))
        elif index % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            self.counts.malformed += 1
            await self.malformed(index)
        else:
            self.counts.valid += 1
            self.counts.valid_ids.add(index)
            await self.valid(index)

    async def valid(self, index: int) -> None:
        x = request_input(index)
        for _ in range(MAX_RETRIES):
            try:
                result = await self.infer(index, x)
            except Exception as error:  # tritonclient's InferenceServerException, or a transport error
                if _is_unavailable(error):
                    self.counts.retried += 1
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                self.counts.server_errors.append((index, _status(error), str(error)[:200]))
                return
            answer_id, y = result
            self.counts.answers[int(answer_id)] += 1
            if int(answer_id) != index or not np.array_equal(y, reference(x)):
                self.counts.wrong.append((index, answer_id))
            return
        self.counts.server_errors.append((index, "retries", f"still 503 after {MAX_RETRIES} tries"))

    async def infer(self, index: int, x: np.ndarray):
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        if index % 2:
            tensor = httpclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=index % 4 == 1)
            result = await self.http.infer(MODEL, [tensor], request_id=str(index))
            return result.get_response()["id"], result.as_numpy("y")
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = await self.grpc.infer(MODEL, [tensor], request_id=str(index))
        return result.get_response().id, result.as_numpy("y")

    async def malformed(self, index: int) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        kind = (index // MALFORMED_EVERY) % 5
        try:
            if kind == 0:  # wrong shape
                x = np.zeros((1, 5), np.float32)
                tensor = grpcclient.InferInput("x", [1, 5], "FP32")
                tensor.set_data_from_numpy(x)
                await self.grpc.infer(MODEL, [tensor], request_id=str(index))
            elif kind == 1:  # wrong datatype
                tensor = httpclient.InferInput("x", [1, 4], "FP64")
                tensor.set_data_from_numpy(np.zeros((1, 4), np.float64))
                await self.http.infer(MODEL, [tensor], request_id=str(index))
            elif kind == 2:  # unknown input
                tensor = grpcclient.InferInput("nope", [1, 4], "FP32")
                tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
                await self.grpc.infer(MODEL, [tensor], request_id=str(index))
            else:  # a body that is not JSON, or a binary body shorter than its header says
                status = await self.raw_http(b"{not json" if kind == 3 else _short_binary_body())
                if status in (400, 503):
                    self.counts.malformed_refused[str(status)] += 1
                else:
                    self.counts.server_errors.append((index, str(status), "malformed body not refused with 400"))
                return
        except Exception as error:
            if _is_invalid(error) or _is_unavailable(error):
                self.counts.malformed_refused[_status(error)] += 1
            else:
                self.counts.server_errors.append((index, _status(error), str(error)[:200]))
            return
        self.counts.wrong.append((index, "a malformed request was answered"))

    async def raw_http(self, body: bytes, header_length: int | None = None, close_at_once: bool = False) -> int:
        reader, writer = await asyncio.open_connection(self.host, int(self.http_port))
        headers = [f"POST /v2/models/{MODEL}/infer HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}",
                   "Connection: close"]
        if body.startswith(SHORT_BINARY_HEADER):
            headers.append(f"Inference-Header-Content-Length: {len(SHORT_BINARY_HEADER)}")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
        await writer.drain()
        if close_at_once:
            writer.transport.abort()  # an RST, not a polite FIN: the client is gone
            return 0
        try:
            status_line = await reader.readline()
            return int(status_line.split()[1])
        finally:
            writer.close()

    async def disconnect_http(self, index: int) -> None:
        x = request_input(index)
        header = json.dumps({"id": str(index), "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                                            "data": x.ravel().tolist()}]}).encode()
        await self.raw_http(header, close_at_once=True)

    async def cancel_grpc(self, index: int) -> None:
        task = asyncio.ensure_future(self.infer(index, request_input(index)))
        await asyncio.sleep(0)  # the call starts, then its client gives up
        task.cancel()
        try:
            await task
        except BaseException:  # CancelledError, or the answer had come already: either way nobody reads it
            pass

    async def unload_and_load(self) -> None:
        import tritonclient.http.aio as http_aio

        client = http_aio.InferenceServerClient(self.http_url)
        try:
            await client.unload_model(MODEL)
            self.counts.unloads += 1
            await asyncio.sleep(0.2)
            await client.load_model(MODEL)
        finally:
            await client.close()


SHORT_BINARY_HEADER = (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
                       b'"parameters": {"binary_data_size": 16}}]}')


def _short_binary_body() -> bytes:
    return SHORT_BINARY_HEADER + b"\x00\x00"  # 2 bytes where the header promises 16


def plan_phases(total: int, levels: list[int]) -> list[tuple[int, range]]:
    """Split `total` requests over the concurrency levels, more to the higher ones (each level at least 4x its
    concurrency where the total allows)."""
    weights = [1 + level ** 0.5 for level in levels]
    counts = [max(int(total * w / sum(weights)), 1) for w in weights]
    counts[-1] += total - sum(counts)
    phases, start = [], 0
    for level, count in zip(levels, counts):
        phases.append((level, range(start, start + count)))
        start += count
    return phases


def run_load(http_url: str, grpc_url: str, total: int, levels: list[int], out: Path | None = None) -> dict:
    import tritonclient.http as httpclient

    counts = Counts()
    unload_at = total // 2
    client = httpclient.InferenceServerClient(http_url)
    before = client.get_inference_statistics(MODEL)["model_stats"][0]
    started = time.perf_counter()
    for level, indices in plan_phases(total, levels):
        at = unload_at if unload_at in indices else None
        asyncio.run(Load(http_url, grpc_url, counts).run_phase(level, indices, at))
        summary = counts.summary()
        print(f"concurrency {level:>3}: {len(indices):>6} requests in {counts.phases[-1]['seconds']:>6.1f} s; "
              f"so far lost {summary['lost']}, duplicated {summary['duplicated']}, wrong {summary['wrong']}, "
              f"server errors {summary['server_errors']}", flush=True)
        if out is not None:
            out.write_text(json.dumps(summary, indent=1))
    deadline = time.monotonic() + 30
    while True:  # the disconnected requests still running finish into the void; then nothing may be left
        stats = client.get_inference_statistics(MODEL)["model_stats"][0]
        pending = _pending(http_url)
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    summary = counts.summary()
    summary.update(requests=total, seconds=round(time.perf_counter() - started, 1), server_pending=pending,
                   server={"success": stats["inference_stats"]["success"]["count"]
                           - before["inference_stats"]["success"]["count"],
                           "cancelled": stats.get("cancelled_count", 0) - before.get("cancelled_count", 0),
                           "executions": stats["execution_count"] - before["execution_count"]})
    if out is not None:
        out.write_text(json.dumps(summary, indent=1))
    return summary


def _pending(http_url: str) -> int:
    """The model's queued and running requests, from the server's /metrics (on its HTTP port)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://{http_url}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(f'nv_inference_pending_request_count{{model="{MODEL}"'):
            return int(float(line.split()[-1]))
    return -1  # the model is not loaded: nobody can tell


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(repository: Path) -> tuple[subprocess.Popen, str, str]:
    import tritonclient.http as httpclient

    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "tensorkiln.cli.main", "serve", str(repository), "--http-port", str(http_port),
               "--grpc-port", str(grpc_port), "--metrics-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    http_url = f"127.0.0.1:{http_port}"
    client = httpclient.InferenceServerClient(http_url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"kiln serve exited: {process.stdout.read()}")
        try:
            if client.is_server_ready() and client.is_model_ready(MODEL):
                return process, http_url, f"127.0.0.1:{grpc_port}"
        except Exception:  # not listening yet
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("kiln serve did not become ready in 300 s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", default="1,4,16,64,128,256", help="comma-separated levels, run in order")
    parser.add_argument("--http-url", help="a running server (host:port) with the affine model; default: start one")
    parser.add_argument("--grpc-url")
    parser.add_argument("--out", type=Path, help="the counts as JSON, rewritten after each level")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    process = None
    if args.http_url:
        http_url, grpc_url = args.http_url, args.grpc_url
    else:
        repository = Path(tempfile.mkdtemp(prefix="kiln-load-"))
        write_affine(repository / MODEL)
        process, http_url, grpc_url = start_server(repository)
    try:
        summary = run_load(http_url, grpc_url, args.requests, levels, args.out)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            exit_code = process.wait(60)
            print(f"kiln serve exited {exit_code} after SIGTERM")
    print(json.dumps({k: v for k, v in summary.items() if k != "phases"}, indent=1))
    bad = summary["lost"] + summary["duplicated"] + summary["wrong"] + summary["server_errors"]
    return 1 if bad or summary["server_pending"] else 0


if __name__ == "__main__":
    sys.exit(main())
