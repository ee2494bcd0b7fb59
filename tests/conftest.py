"""Shared test fixtures: where the shared models and datasets live, the GPU marker, and a model exported with
dynamic axes (optimization profiles, tests/runtime and tests/gpu)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("TENSORKILN_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "models").is_dir():
        pytest.skip(f"shared models not found at {SHARED} (set TENSORKILN_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def dynamic_model(tmp_path_factory) -> bytes:
    """Conv -> ReLU -> tokens (reshaped by the input's own sizes) and a pooled classifier, exported by torch with
    dynamic batch, height and width: its reshape targets come from Shape ops, as exporters write them."""
    import torch

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x):
            features = torch.relu(self.conv(x))
            tokens = features.reshape(features.shape[0], 8, -1).transpose(1, 2)
            return tokens, torch.softmax(self.fc(features.mean((2, 3))), -1)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("profiles") / "tokens.onnx"
    torch.onnx.export(Tokens().eval(), (torch.randn(1, 3, 8, 8),), str(path), input_names=["x"],
                      output_names=["tokens", "probs"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    return path.read_bytes()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not the keyword: tests/gpu/ is a keyword
            item.add_marker(skip_gpu)  # of every test in that folder, and test_triton_kernels runs in an interpreter
