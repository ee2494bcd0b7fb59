"""The repository on Ray Serve: a local Ray cluster on the CPU, two replicas behind Ray's HTTP proxy, driven with
tritonclient's HTTP client (the KServe v2 JSON and binary infer bodies); answers equal `kiln serve`'s reference."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import affine_reference, free_port, write_affine

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'tensorkiln[ray]')")
serve = pytest.importorskip("ray.serve")

import tritonclient.http as httpclient  # noqa: E402

from tensorkiln.serve.ray_deployment import RayDeploymentOptions, build_application  # noqa: E402


@pytest.fixture(scope="module")
def ray_url(tmp_path_factory):
    repository = tmp_path_factory.mktemp("ray-repository")
    write_affine(repository / "affine")
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(repository, RayDeploymentOptions(replicas=2, num_cpus=1)),
                  name="tensorkiln", route_prefix="/")
        yield f"127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.parametrize("binary", [False, True])
def test_ray_serve_answers_kserve_v2_infer(ray_url, binary):
    client = httpclient.InferenceServerClient(ray_url, network_timeout=60)
    assert client.is_server_ready() and client.is_model_ready("affine")
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    tensor = httpclient.InferInput("x", [3, 4], "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    output = httpclient.InferRequestedOutput("y", binary_data=binary)
    np.testing.assert_array_equal(client.infer("affine", [tensor], outputs=[output]).as_numpy("y"),
                                  affine_reference(x))


def test_ray_serve_runs_two_replicas_that_all_answer(ray_url):
    client = httpclient.InferenceServerClient(ray_url, network_timeout=60)
    x = np.ones((1, 4), np.float32)
    tensor = httpclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    for _ in range(40):
        np.testing.assert_array_equal(client.infer("affine", [tensor]).as_numpy("y"), affine_reference(x))
    status = serve.status().applications["tensorkiln"]
    assert status.status == "RUNNING"
    assert status.deployments["tensorkiln"].replica_states.get("RUNNING") == 2
