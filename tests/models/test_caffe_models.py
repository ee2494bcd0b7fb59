"""Every Caffe model in the shared folder, built from prototxt + caffemodel and compared with the outputs of
OpenCV's Caffe importer stored next to it; LeNet's accuracy on MNIST; UltraFace against its ONNX copy."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.importers.caffe import parse_caffe

CAFFE = "models/caffe"
MODELS = [  # (folder, prototxt, caffemodel, reference)
    ("lenet_mnist", "lenet.prototxt", "lenet_iter_10000.caffemodel", "reference.npz"),
    ("cifar10_quick", "cifar10_quick.prototxt", "cifar10_quick_iter_5000.caffemodel", "reference.npz"),
    ("mtcnn", "det1.prototxt", "det1.caffemodel", "reference_det1.npz"),
    ("mtcnn", "det2.prototxt", "det2.caffemodel", "reference_det2.npz"),
    ("mtcnn", "det3.prototxt", "det3.caffemodel", "reference_det3.npz"),
    ("ultraface_slim320", "slim-320.prototxt", "slim-320.caffemodel", "reference.npz"),
]


def build(deploy, model, **kwargs) -> tk.Engine:
    """Build, serialize and reload, as a deployment would."""
    engine = tk.Builder().build(parse_caffe(deploy, model, **kwargs))
    return tk.Runtime().deserialize(engine.serialize())


@pytest.mark.parametrize("folder, prototxt, caffemodel, reference", MODELS, ids=[m[1] for m in MODELS])
def test_caffe_model_matches_reference(shared_dir, folder, prototxt, caffemodel, reference):
    base = shared_dir / CAFFE / folder
    stored = np.load(base / reference)
    inputs = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith("input:")}
    expected = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith("output:") and k != "output:labels"}
    engine = build(base / prototxt, base / caffemodel, input_shapes={k: v.shape for k, v in inputs.items()})
    assert sorted(t.name for t in engine.outputs) == sorted(expected)  # default outputs: the unconsumed tops
    outputs = engine.create_execution_context().execute(inputs)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-4, atol=1e-5, err_msg=f"{prototxt}: {name}")


def test_lenet_accuracy_on_mnist(shared_dir):
    base = shared_dir / CAFFE / "lenet_mnist"
    with gzip.open(shared_dir / "datasets" / "mnist_5k" / "mnist_5k.csv.gz") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1].reshape(-1, 1, 28, 28) * np.float32(0.00390625), table[:, -1].astype(np.int64)
    engine = build(base / "lenet.prototxt", base / "lenet_iter_10000.caffemodel", batch_size=len(labels),
                   outputs=["prob"])
    probabilities = engine.create_execution_context().execute({"data": pixels})["prob"]
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    assert accuracy >= 0.997, accuracy


def test_ultraface_caffe_matches_onnx_copy(shared_dir):
    from tensorkiln.importers.onnx import parse_onnx

    base = shared_dir / CAFFE / "ultraface_slim320"
    image = np.load(base / "reference.npz")["input:input"]
    caffe_engine = build(base / "slim-320.prototxt", base / "slim-320.caffemodel")
    onnx_path = shared_dir / "models/onnx/ultraface/version-slim-320_without_postprocessing.onnx"
    onnx_engine = tk.Builder().build(parse_onnx(onnx_path, input_shapes={"input": image.shape}))
    from_caffe = caffe_engine.create_execution_context().execute({"input": image})
    from_onnx = onnx_engine.create_execution_context().execute({"input": image})
    for name in ("boxes", "scores"):
        np.testing.assert_allclose(from_caffe[name], from_onnx[name], rtol=1e-4, atol=1e-5, err_msg=name)
