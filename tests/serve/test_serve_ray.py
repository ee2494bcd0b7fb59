"""The repository on Ray Serve, by its documented command (`python -m tensorkiln.serve.ray_app`): a local Ray
cluster on the CPU, two replicas behind Ray's HTTP proxy, driven with tritonclient's HTTP client (the KServe v2
JSON and binary infer bodies); answers equal the reference; SIGTERM stops it cleanly."""
from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import affine_reference, free_port, write_affine

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'tensorkiln[ray]')")

import tritonclient.http as httpclient  # noqa: E402

from tensorkiln.serve.ray_deployment import REPLICA_HEADER  # noqa: E402

REQUESTS = 40


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("ray-repository")
    write_affine(repository / "affine")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tensorkiln.serve.ray_app", str(repository), "--http-port",
                                str(port), "--replicas", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        for line in process.stdout:  # the banner comes once every replica is up
            if line.startswith("tensorkiln on Ray Serve:"):
                break
        else:
            pytest.fail(f"ray_app exited with {process.wait()} before serving")
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.parametrize("binary", [False, True])
def test_ray_serve_answers_kserve_v2_infer(ray_server, binary):
    client = httpclient.InferenceServerClient(ray_server[1], network_timeout=60)
    assert client.is_server_ready() and client.is_model_ready("affine")
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    tensor = httpclient.InferInput("x", [3, 4], "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    output = httpclient.InferRequestedOutput("y", binary_data=binary)
    np.testing.assert_array_equal(client.infer("affine", [tensor], outputs=[output]).as_numpy("y"),
                                  affine_reference(x))


def test_two_replicas_share_the_requests_and_sigterm_stops_them(ray_server):
    process, url = ray_server
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [-1, 0, 1, 2]}]})
    replicas = collections.Counter()
    for _ in range(REQUESTS):
        request = urllib.request.Request(f"http://{url}/v2/models/affine/infer", data=body.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.load(response)["outputs"][0]["data"] == [0.0, 1.0, 3.0, 5.0]
            replicas[response.headers[REPLICA_HEADER]] += 1
    assert len(replicas) == 2, replicas  # Ray's proxy spreads them (all on one: odds 2**-39)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0 and "stopping" in process.stdout.read()
    assert time.monotonic() - started < 60
