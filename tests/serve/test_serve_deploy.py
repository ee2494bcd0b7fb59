"""deploy/: the Dockerfile and the Kubernetes manifests (a Deployment + Service, a KServe InferenceService) are not
run here; their structure is checked, and the `kiln serve` command each one runs is parsed by kiln's own parser,
so that a renamed flag, a port that the probes or the Service do not match, or a repository path that is not the
mounted volume fails here rather than in a cluster."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tensorkiln.cli.main import make_parser

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _documents(name: str) -> dict[str, dict]:
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]
    return {d["kind"]: d for d in documents}


def _serve_args(args: list[str]):
    parsed = make_parser().parse_args(["serve", *args])
    assert parsed.host == "0.0.0.0", "in a container kiln serve must listen on all interfaces"
    return parsed


def _check_container(container: dict, repository_path: str) -> dict[str, int]:
    """The container's kiln serve ports by name; checks its probes and repository argument."""
    parsed = _serve_args(container["args"])
    assert str(parsed.repository) == repository_path
    declared = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container["ports"]}
    assert parsed.http_port in declared.values()
    if parsed.grpc_port:
        assert declared["grpc"] == parsed.grpc_port
    if parsed.metrics_port:
        assert declared["metrics"] == parsed.metrics_port

    def probe_port(probe):
        port = container[probe]["httpGet"]["port"]
        return declared[port] if isinstance(port, str) else port

    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe_port(probe) == parsed.http_port
    return declared


def test_deployment_and_service_run_kiln_serve_on_the_repository_volume():
    documents = _documents("kiln-serve.yaml")
    assert set(documents) == {"PersistentVolumeClaim", "Deployment", "Service"}
    deployment, service = documents["Deployment"], documents["Service"]
    pod = deployment["spec"]["template"]["spec"]
    container, = pod["containers"]
    mount, = container["volumeMounts"]
    volume, = pod["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == documents["PersistentVolumeClaim"]["metadata"]["name"]
    declared = _check_container(container, mount["mountPath"])
    assert set(declared) == {"http", "grpc", "metrics"}
    assert pod["terminationGracePeriodSeconds"] > 30  # kiln serve's drain timeout
    assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(declared)


def test_inference_service_runs_kiln_serve_on_kserves_model_mount():
    service = _documents("inferenceservice.yaml")["InferenceService"]
    assert service["apiVersion"].startswith("serving.kserve.io/")
    container, = service["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert {e["name"] for e in container["env"]} >= {"STORAGE_URI"}
    declared = _check_container(container, "/mnt/models")
    assert list(declared.values()) == [8080]  # KServe routes a single port


def test_dockerfile_installs_the_serve_extra_and_runs_kiln_serve():
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert any(re.search(r"pip install .*\"\.\[serve\]\"", line) for line in instructions)
    entrypoint = json.loads(next(line for line in instructions if line.startswith("ENTRYPOINT")).split(None, 1)[1])
    command = json.loads(next(line for line in instructions if line.startswith("CMD")).split(None, 1)[1])
    assert entrypoint == ["kiln", "serve"]
    parsed = _serve_args(command)
    exposed = {int(port) for line in instructions if line.startswith("EXPOSE") for port in line.split()[1:]}
    assert exposed == {parsed.http_port, parsed.grpc_port, parsed.metrics_port}
    image = _documents("kiln-serve.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("tensorkiln-serve:") and "tensorkiln-serve" in text
