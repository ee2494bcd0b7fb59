"""Faults: malformed payloads, wrong names/shapes/dtypes, oversized bodies, a full queue, an unload while requests
wait, SIGTERM; every accepted request gets exactly one answer."""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading
import time

import numpy as np
import pytest

from conftest import ServerProcess, affine_reference, make_repository

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tensorkiln.serve.config import ModelSettings
from tensorkiln.serve.errors import Unavailable
from tensorkiln.serve.scheduler import Scheduler
from tensorkiln.serve.stats import ModelStats


SHORT_BINARY_HEADER = (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
                       b'"parameters": {"binary_data_size": 16}}]}')  # followed by 2 bytes, not 16


def _post(server, path, body: bytes, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    connection.request("POST", path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read(), dict(response.getheaders())


@pytest.mark.parametrize("body, headers, message", [
    (b"{not json", {}, "not valid JSON"),
    (b'{"inputs": 3}', {}, "'inputs' list"),
    (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2]}]}', {}, "2 values"),
    (SHORT_BINARY_HEADER + b"\x00\x00", {"Inference-Header-Content-Length": str(len(SHORT_BINARY_HEADER))},
     "binary_data_size"),
    (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
     {"Inference-Header-Content-Length": "9999"}, "outside the body"),
    (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "STRING", "data": [1, 2, 3, 4]}]}', {}, "not served"),
])
def test_malformed_http_bodies_get_400(server, body, headers, message):
    status, content, _ = _post(server, "/v2/models/affine/infer", body, headers)
    assert status == 400 and message in json.loads(content)["error"]


def test_oversized_body_gets_413(server):
    status, content, _ = _post(server, "/v2/models/affine/infer", b"{}", {"Content-Length": str(1 << 30)})
    assert status == 413 and "--max-request-bytes" in json.loads(content)["error"]


@pytest.mark.parametrize("name, array, message", [
    ("z", np.ones((1, 4), np.float32), "has no input 'z'"),
    ("x", np.ones((1, 5), np.float32), "shape [1, 5]"),
    ("x", np.ones((9, 4), np.float32), "batch of 1..8"),
    ("x", np.ones((1, 4), np.float64), "datatype FP64, expected FP32"),
])
def test_wrong_inputs_are_refused_over_both_protocols(server, name, array, message):
    datatype = "FP64" if array.dtype == np.float64 else "FP32"
    for module, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException, match=message.replace("[", r"\[").replace("]", r"\]")):
            module.InferenceServerClient(url).infer("affine", [tensor])


def test_unknown_model_is_404(server):
    status, content, _ = _post(server, "/v2/models/nothing/infer", b'{"inputs": []}')
    assert status == 404 and "no model 'nothing'" in json.loads(content)["error"]


class SlowEngine:
    """Stands in for an engine: y = x + 1 after a pause, so that requests pile up in the queue."""
    inputs = outputs = ()

    def __init__(self, pause_s: float):
        self.pause_s = pause_s

    def create_execution_context(self):
        return self

    def execute(self, feed):
        time.sleep(self.pause_s)
        return {"y": feed["x"] + 1}


def test_full_queue_refuses_with_retry_hint_and_answers_the_rest():
    settings = ModelSettings(name="slow", max_queue_size=4)
    scheduler = Scheduler(settings, {0: SlowEngine(0.05)}, ModelStats())
    accepted, refused = [], 0
    for index in range(12):
        try:
            accepted.append((index, scheduler.submit({"x": np.full((1,), index, np.float32)}, 1)))
        except Unavailable as error:
            assert "queue is full" in str(error) and "retry after" in str(error)
            refused += 1
    assert refused >= 6 and refused + len(accepted) == 12
    for index, future in accepted:
        assert future.result(10)["y"][0] == index + 1
    scheduler.close()


def test_unload_while_queued_answers_every_queued_request():
    settings = ModelSettings(name="slow", max_batch_size=2, dynamic_batching=True, max_queue_delay_us=1000)
    scheduler = Scheduler(settings, {1: SlowEngine(0.02), 2: SlowEngine(0.02)}, ModelStats())
    futures = [scheduler.submit({"x": np.full((1, 3), i, np.float32)}, 1) for i in range(20)]
    closer = threading.Thread(target=scheduler.close)
    closer.start()
    time.sleep(0.01)
    with pytest.raises(Unavailable, match="being unloaded"):
        scheduler.submit({"x": np.zeros((1, 3), np.float32)}, 1)
    closer.join(10)
    for index, future in enumerate(futures):
        np.testing.assert_array_equal(future.result(0)["y"], np.full((1, 3), index + 1, np.float32))


def test_sigterm_drains_and_exits(tmp_path):
    process = ServerProcess(make_repository(tmp_path / "repository"), ["--grpc-port", "0"])
    try:
        process.wait_ready()
        x = np.arange(8, dtype=np.float32).reshape(2, 4)

        def one_request(_):
            client = httpclient.InferenceServerClient(process.http_url, network_timeout=30)
            tensor = httpclient.InferInput("x", [2, 4], "FP32")
            tensor.set_data_from_numpy(x)
            try:
                return client.infer("affine", [tensor]).as_numpy("y")
            except Exception as error:  # refused after the signal: must be a clean 503 or a refused connection
                return error

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one_request, range(16)))
            process.process.send_signal(15)
            late = list(pool.map(one_request, range(8)))
        assert process.process.wait(60) == 0
        for result in results:
            np.testing.assert_array_equal(result, affine_reference(x))
        for result in late:
            assert isinstance(result, np.ndarray) or "503" in str(result) or "shutting down" in str(result) \
                or "onnect" in str(result)
    finally:
        process.stop()
