"""A `kiln serve` process on free loopback ports over a repository made in the test: a small batched model written
here (`affine`: y = relu(2x + 1) on [-1, 4], elementwise, so a row's answer is the same whatever the batch) and,
where /work/shared is present, UltraFace (ONNX) twice: unbatched, and batched on one engine with a batch profile
(`ultraface_batched`: batches of up to 4, one instance, a 1 s queue delay so that the requests a test sends
together form one batch)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient, grpcio, uvicorn) is not installed")
pytest.importorskip("uvicorn")

ULTRAFACE = (Path(__file__).resolve().parents[3]
             / "shared/models/onnx/ultraface/version-slim-320_without_postprocessing.onnx")
AFFINE_CONFIG = """
max_batch_size: 8
input [{ name: "x", data_type: TYPE_FP32, dims: [4] }]
output [{ name: "y", data_type: TYPE_FP32, dims: [4] }]
dynamic_batching { preferred_batch_size: [8] max_queue_delay_microseconds: 2000
                   default_queue_policy { max_queue_size: 256 } }
instance_group [{ count: 2 }]
"""
ULTRAFACE_BATCHED_CONFIG = """
max_batch_size: 4
dynamic_batching { preferred_batch_size: [4] max_queue_delay_microseconds: 1000000 }
instance_group [{ count: 1 }]
"""


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, repository: Path, extra: list[str] = ()):
        self.repository = repository
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        command = [sys.executable, "-m", "tensorkiln.cli.main", "serve", str(repository),
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                   "--metrics-port", str(self.metrics_port), *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 120) -> None:
        import tritonclient.http as http

        client = http.InferenceServerClient(self.http_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kiln serve exited: {self.process.stdout.read()}")
            try:
                if client.is_server_ready():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        raise TimeoutError("kiln serve did not become ready")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def make_repository(root: Path) -> Path:
    write_affine(root / "affine")
    if ULTRAFACE.exists():
        (root / "ultraface/1").mkdir(parents=True)
        os.symlink(ULTRAFACE, root / "ultraface/1/model.onnx")
        (root / "ultraface_batched/1").mkdir(parents=True)
        os.symlink(ULTRAFACE, root / "ultraface_batched/1/model.onnx")
        (root / "ultraface_batched/config.pbtxt").write_text(ULTRAFACE_BATCHED_CONFIG)
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    process = ServerProcess(make_repository(tmp_path_factory.mktemp("repository")))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def affine_reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x * np.float32(2) + np.float32(1), np.float32(0))
