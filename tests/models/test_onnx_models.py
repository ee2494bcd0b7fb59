"""Whole real models from ../shared/models/onnx, built and compared with their stored reference outputs."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

# (model file, reference file) relative to models/onnx; silero_vad needs If and LSTM (a later issue)
MODELS = [
    ("ultraface/version-slim-320.onnx", "ultraface/reference_version-slim-320.npz"),
    ("ultraface/version-RFB-320.onnx", "ultraface/reference_version-RFB-320.npz"),
    ("ultraface/version-slim-320_without_postprocessing.onnx",
     "ultraface/reference_version-slim-320_without_postprocessing.npz"),
    ("centerface/centerface.onnx", "centerface/reference.npz"),
    ("mtcnn_keras2onnx/pnet.onnx", "mtcnn_keras2onnx/reference_pnet.npz"),
    ("mtcnn_keras2onnx/rnet.onnx", "mtcnn_keras2onnx/reference_rnet.npz"),
    ("mtcnn_keras2onnx/onet.onnx", "mtcnn_keras2onnx/reference_onet.npz"),
    ("ppocrv4_det_cls/ch_PP-OCRv4_det_infer.onnx", "ppocrv4_det_cls/reference_det.npz"),
    ("ppocrv4_det_cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", "ppocrv4_det_cls/reference_cls.npz"),
    ("ort_tiny/mul_1.onnx", "ort_tiny/reference_mul_1.npz"),
    ("ort_tiny/sigmoid.onnx", "ort_tiny/reference_sigmoid.npz"),
]
MAX_RELATIVE_ERROR = 1e-4  # FP32: max |out - ref| over max |ref|, per output


def load_reference(path):
    data = np.load(path, allow_pickle=False)
    inputs = {k[len("input:"):]: data[k] for k in data.files if k.startswith("input:")}
    outputs = {k[len("output:"):]: data[k] for k in data.files if k.startswith("output:")}
    return inputs, outputs


@pytest.mark.parametrize("model_file, reference_file", MODELS, ids=[m for m, _ in MODELS])
def test_model_matches_reference(shared_dir, model_file, reference_file):
    inputs, expected = load_reference(shared_dir / "models" / "onnx" / reference_file)
    network = parse_onnx(shared_dir / "models" / "onnx" / model_file,
                         input_shapes={name: value.shape for name, value in inputs.items()})
    engine = tk.Runtime().deserialize(tk.Builder().build(network).serialize())
    outputs = engine.create_execution_context().execute(inputs)
    # every activation placed in the planned arena gives the same outputs: the memory plan is sound (not
    # bit-identical: contiguous arena copies of transposed views can take other kernel paths)
    in_arena = engine.create_execution_context(use_arena=True).execute(inputs)
    for name in outputs:
        scale = max(float(np.max(np.abs(outputs[name]))), 1e-12)
        np.testing.assert_allclose(in_arena[name], outputs[name], rtol=0, atol=1e-5 * scale)
    assert set(outputs) == set(expected)
    for name, reference in expected.items():
        assert outputs[name].shape == reference.shape, name
        error = np.max(np.abs(outputs[name].astype(np.float64) - reference)) / max(np.max(np.abs(reference)), 1e-12)
        assert error <= MAX_RELATIVE_ERROR, f"{name}: relative error {error:.2e}"


def test_centerface_declared_shape_is_overridable(shared_dir):
    network = parse_onnx(shared_dir / "models/onnx/centerface/centerface.onnx", input_shapes={"input.1": (1, 3, 256, 320)})
    assert network.ir.inputs[0].shape == (1, 3, 256, 320)
    engine = tk.Builder().build(network)
    outputs = engine.create_execution_context().execute(
        {"input.1": np.random.default_rng(0).standard_normal((1, 3, 256, 320), dtype=np.float32)})
    assert all(np.isfinite(v).all() for v in outputs.values())


def test_ppocr_dynamic_dims_require_shapes(shared_dir):
    with pytest.raises(tk.TensorkilnError, match="dynamic dimension"):
        parse_onnx(shared_dir / "models/onnx/ppocrv4_det_cls/ch_PP-OCRv4_det_infer.onnx")
