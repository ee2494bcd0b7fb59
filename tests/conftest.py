"""Shared test fixtures: where the shared models and datasets live, and the GPU marker."""
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


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not the keyword: tests/gpu/ is a keyword
            item.add_marker(skip_gpu)  # of every test in that folder, and test_triton_kernels runs in an interpreter
