"""examples/mnist_api.py: LeNet built with the network API from Caffe weights, checked for accuracy and
against the outputs of the reference Caffe runtime (OpenCV's DNN module) stored with the model."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist_api.py"
MAX_RELATIVE_ERROR = 1e-4  # FP32: max |out - ref| over max |ref|


@pytest.fixture(scope="module")
def mnist_api():
    spec = importlib.util.spec_from_file_location("examples_mnist_api", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def paths(shared_dir):
    model_dir = shared_dir / "models" / "caffe" / "lenet_mnist"
    dataset = shared_dir / "datasets" / "mnist_5k" / "mnist_5k.csv.gz"
    if not dataset.is_file():
        pytest.skip(f"MNIST digits not found at {dataset}")
    return model_dir, dataset


def test_example_accuracy(mnist_api, paths, capsys):
    model_dir, dataset = paths
    accuracy = mnist_api.main(["--model-dir", str(model_dir), "--dataset", str(dataset)])
    assert accuracy >= 0.99
    assert f"{100 * accuracy:.2f}%" in capsys.readouterr().out


def test_engine_matches_reference_outputs(mnist_api, paths):
    model_dir, dataset = paths
    reference = np.load(model_dir / "reference.npz", allow_pickle=False)
    inputs, expected = reference["input:data"][:8], reference["output:prob"][:8]
    engine, input_scale = mnist_api.build_engine(model_dir, batch_size=8)

    # the example preprocesses the digits as the reference did: the first digits of the dataset, scaled
    pixels, labels = mnist_api.load_mnist(dataset)
    np.testing.assert_array_equal(pixels[:8] * np.float32(input_scale), inputs)
    np.testing.assert_array_equal(labels[:8], reference["output:labels"][:8])

    outputs = mnist_api.classify(engine, inputs)
    assert outputs.shape == expected.shape
    error = np.max(np.abs(outputs.astype(np.float64) - expected)) / np.max(np.abs(expected))
    assert error <= MAX_RELATIVE_ERROR, f"relative error {error:.2e}"
    np.testing.assert_array_equal(outputs.argmax(axis=1), expected.argmax(axis=1))
