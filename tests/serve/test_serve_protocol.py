"""kiln serve driven by the real tritonclient (HTTP and gRPC, sync and async) over loopback."""
from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest

from conftest import ULTRAFACE, affine_reference

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def _http_input(name, array, binary=True):
    tensor = httpclient.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _grpc_input(name, array):
    tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_matches_reference(server, binary):
    client = httpclient.InferenceServerClient(server.http_url)
    x = np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("y", binary_data=binary)]
    result = client.infer("affine", [_http_input("x", x, binary)], outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("y"), affine_reference(x))
    assert result.get_response()["id"] == "r1"


def test_grpc_infer_matches_reference(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = np.random.default_rng(1).standard_normal((5, 4), dtype=np.float32)
    result = client.infer("affine", [_grpc_input("x", x)])
    np.testing.assert_array_equal(result.as_numpy("y"), affine_reference(x))


def test_async_clients(server):
    import tritonclient.grpc.aio as grpc_aio
    import tritonclient.http.aio as http_aio

    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1 + i % 3, 4), dtype=np.float32) for i in range(16)]

    async def run():
        http, grpc = http_aio.InferenceServerClient(server.http_url), grpc_aio.InferenceServerClient(server.grpc_url)
        try:
            http_results = await asyncio.gather(*(http.infer("affine", [_http_input("x", x)]) for x in xs))
            grpc_results = await asyncio.gather(*(grpc.infer("affine", [_grpc_input("x", x)]) for x in xs))
        finally:
            await http.close()
            await grpc.close()
        return http_results, grpc_results

    http_results, grpc_results = asyncio.run(run())
    for x, h, g in zip(xs, http_results, grpc_results):
        np.testing.assert_array_equal(h.as_numpy("y"), affine_reference(x))
        np.testing.assert_array_equal(g.as_numpy("y"), affine_reference(x))


def test_health_metadata_config_repository(server):
    clients = (httpclient.InferenceServerClient(server.http_url), grpcclient.InferenceServerClient(server.grpc_url))
    for client in clients:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("affine")
        assert not client.is_model_ready("no_such_model")
    http = httpclient.InferenceServerClient(server.http_url)
    assert "model_repository" in http.get_server_metadata()["extensions"]
    metadata = http.get_model_metadata("affine")
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    config = http.get_model_config("affine")
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["preferred_batch_size"] == [8]
    grpc_config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("affine").config
    assert grpc_config.instance_group[0].count == 2
    assert {"name": "affine", "version": "1", "state": "READY", "reason": ""} in http.get_model_repository_index()


def test_statistics_and_metrics(server):
    http = httpclient.InferenceServerClient(server.http_url)
    before = http.get_inference_statistics("affine")["model_stats"][0]
    x = np.ones((2, 4), np.float32)
    http.infer("affine", [_http_input("x", x)])
    after = http.get_inference_statistics("affine")["model_stats"][0]
    assert after["inference_count"] == before["inference_count"] + 2
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    grpc_stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics("affine")
    assert grpc_stats.model_stats[0].inference_count == after["inference_count"]
    for port in (server.http_port, server.metrics_port):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        line = next(l for l in text.splitlines() if l.startswith('nv_inference_count_total{model="affine"'))
        assert float(line.split()[-1]) >= after["inference_count"]


def test_load_and_unload(server):
    http = httpclient.InferenceServerClient(server.http_url)
    http.unload_model("affine")
    assert not http.is_model_ready("affine")
    with pytest.raises(Exception, match="not loaded"):
        http.infer("affine", [_http_input("x", np.ones((1, 4), np.float32))])
    grpcclient.InferenceServerClient(server.grpc_url).load_model("affine")
    assert http.is_model_ready("affine")
    np.testing.assert_array_equal(http.infer("affine", [_http_input("x", np.ones((1, 4), np.float32))]).as_numpy("y"),
                                  np.full((1, 4), 3, np.float32))


@pytest.mark.skipif(not ULTRAFACE.exists(), reason="needs /work/shared/models (UltraFace)")
def test_ultraface_bit_for_bit_with_direct_execution(server):
    from tensorkiln.runtime import Runtime

    engine = Runtime().load(server.repository / "ultraface/1/.kiln-cache/model.b0.engine")  # the served engine
    x = np.random.default_rng(3).random((1, 3, 240, 320), dtype=np.float32)
    direct = engine.create_execution_context().execute({"input": x})
    http_result = httpclient.InferenceServerClient(server.http_url).infer("ultraface", [_http_input("input", x)])
    grpc_result = grpcclient.InferenceServerClient(server.grpc_url).infer("ultraface", [_grpc_input("input", x)])
    for name in ("scores", "boxes"):
        np.testing.assert_array_equal(http_result.as_numpy(name), direct[name])
        np.testing.assert_array_equal(grpc_result.as_numpy(name), direct[name])
    reference = np.load(ULTRAFACE.parent / "reference_version-slim-320_without_postprocessing.npz")
    stored = httpclient.InferenceServerClient(server.http_url).infer(
        "ultraface", [_http_input("input", reference["input:input"])])
    np.testing.assert_allclose(stored.as_numpy("scores"), reference["output:scores"], atol=1e-4)


def test_binary_output_of_an_empty_tensor_is_written_as_no_bytes():
    """memoryview cannot cast a shape with a zero: such an output once failed the response."""
    from types import SimpleNamespace

    from tensorkiln.serve.protocol import encode_response

    model = SimpleNamespace(name="m", version="1", outputs=[SimpleNamespace(name="y", datatype="FP32")])
    body, header_length = encode_response(model, {"parameters": {"binary_data_output": True}},
                                          {"y": np.zeros((0, 4), np.float32)})
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["shape"] == [0, 4] and header["outputs"][0]["parameters"]["binary_data_size"] == 0
    assert len(body) == header_length
