"""FP8 Q/DQ models (QuantizeLinear / DequantizeLinear with float8 zero points, FP8 weights): tensorkiln holds FP8
values as float32 (every FP8 value is a float32 one), so they build, serialize, load and match onnxruntime on the
CPU, instead of failing with "numpy dtype float8_e4m3fn is not supported" (issue 18)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_case import assert_close, run_onnxruntime, run_tensorkiln
from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.onnx import parse_onnx

FP8 = {"e4m3fn": TensorProto.FLOAT8E4M3FN, "e5m2": TensorProto.FLOAT8E5M2}
LARGEST = {"e4m3fn": 448.0, "e5m2": 57344.0}
SCALE = 0.05


def _model(nodes, inputs, outputs, initializers, opset: int = 19) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "fp8", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _qdq(fp8: int, shape, saturate: int = 1, zero_point: float = 0.0) -> onnx.ModelProto:
    """x -> QuantizeLinear (to FP8, per-tensor scale) -> q -> DequantizeLinear -> y: x rounded to the FP8 grid."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    initializers = [numpy_helper.from_array(np.array(SCALE, np.float32), "scale"),
                    helper.make_tensor("zero_point", fp8, [], [zero_point])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], name="quantize",
                              saturate=saturate),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], name="dequantize")]
    return _model(nodes, [x], [y], initializers)


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("kind", list(FP8))
def test_fp8_quantize_dequantize_matches_onnxruntime(kind, saturate):
    rng = np.random.default_rng(0)
    # values across the grid, some past the largest FP8 value (x / scale > 448 for e4m3fn): saturated or not
    x = (rng.standard_normal((3, 37)) * 6).astype(np.float32)
    x[0, :4] = [LARGEST[kind] * SCALE * 2, -LARGEST[kind] * SCALE * 2, 1e-6, 0.0]
    model = _qdq(FP8[kind], x.shape, saturate)
    expected = run_onnxruntime(model, {"x": x})[0]
    actual = run_tensorkiln(model, {"x": x})[0]
    assert_close(actual, expected, f"FP8 {kind} Q/DQ, saturate={saturate}")
    finite = np.isfinite(expected)
    assert not np.array_equal(expected[finite], x[finite])  # the round trip really rounds (not the identity)
    if saturate:
        assert expected[0, 0] == LARGEST[kind] * np.float32(SCALE)


@pytest.mark.parametrize("kind", list(FP8))
def test_fp8_weights_dequantized_into_a_matmul(kind):
    """FP8 weights (an initializer) -> DequantizeLinear with a per-column scale -> MatMul."""
    rng = np.random.default_rng(1)
    weights = rng.uniform(-3, 3, (8, 5)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    initializers = [helper.make_tensor("w_fp8", FP8[kind], [8, 5], weights.reshape(-1).tolist()),
                    numpy_helper.from_array(rng.uniform(0.5, 2, 5).astype(np.float32), "w_scale"),
                    helper.make_tensor("w_zero", FP8[kind], [5], [0.0] * 5)]
    nodes = [helper.make_node("DequantizeLinear", ["w_fp8", "w_scale", "w_zero"], ["w"], name="dequantize", axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    model = _model(nodes, [x], [y], initializers)
    feed = {"x": rng.standard_normal((2, 8)).astype(np.float32)}
    assert_close(run_tensorkiln(model, feed)[0], run_onnxruntime(model, feed)[0], f"FP8 {kind} weights")


def test_fp8_quantized_weights_folded_at_build_time():
    """float weights -> Q (FP8) -> DQ -> MatMul: the round trip runs on constants while the engine is built."""
    rng = np.random.default_rng(2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    initializers = [numpy_helper.from_array(rng.uniform(-3, 3, (8, 5)).astype(np.float32), "w_float"),
                    numpy_helper.from_array(np.array(SCALE, np.float32), "scale"),
                    helper.make_tensor("zero_point", TensorProto.FLOAT8E4M3FN, [], [0.0])]
    nodes = [helper.make_node("QuantizeLinear", ["w_float", "scale", "zero_point"], ["w_q"], name="quantize"),
             helper.make_node("DequantizeLinear", ["w_q", "scale", "zero_point"], ["w"], name="dequantize"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    model = _model(nodes, [x], [y], initializers)
    feed = {"x": rng.standard_normal((2, 8)).astype(np.float32)}
    assert_close(run_tensorkiln(model, feed)[0], run_onnxruntime(model, feed)[0], "FP8 Q/DQ weights")


def test_fp8_zero_point_other_than_zero_is_refused():
    with pytest.raises(ModelFormatError, match=r"'quantize'.*FP8 zero point \(float8_e4m3fn\) is not a constant 0"):
        parse_onnx(_qdq(TensorProto.FLOAT8E4M3FN, (2, 3), zero_point=1.0))
