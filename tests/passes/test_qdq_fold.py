"""Explicit quantization: onnxruntime quantize_static QDQ models (per-tensor and per-channel int8), built by
tensorkiln and compared with onnxruntime's own run of the same QDQ model."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.passes.manager import pipeline_with

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

CHANNELS = 8


def _float_model(path, rng):
    """conv -> BatchNorm -> relu -> maxpool -> conv -> relu -> add -> global average pool -> flatten -> gemm."""
    def init(name, shape, scale=0.3, low=None):
        value = rng.uniform(low, 1.5, shape) if low is not None else rng.standard_normal(shape) * scale
        return numpy_helper.from_array(value.astype(np.float32), name)

    node = helper.make_node
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn1"], name="bn1"),
             node("Relu", ["bn1"], ["r1"], name="relu1"),
             node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
             node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2"),
             node("Relu", ["c2"], ["r2"], name="relu2"),
             node("Add", ["r2", "shift"], ["a2"], name="add"),
             node("GlobalAveragePool", ["a2"], ["g2"], name="gap"),
             node("Flatten", ["g2"], ["f"], name="flatten"),
             node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc")]
    c = CHANNELS
    initializers = [init("w1", (c, 3, 3, 3)), init("b1", c, 0.1), init("gamma", c, low=0.5), init("beta", c, 0.1),
                    init("mean", c, 0.1), init("var", c, low=0.5), init("w2", (c, c, 1, 1)), init("b2", c, 0.1),
                    init("shift", (1, c, 1, 1), 1.0), init("w3", (5, c)), init("b3", 5, 0.1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, rng):
        self.batches = iter([{"x": rng.standard_normal((2, 3, 12, 12)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.batches, None)


def quantized_model(tmp_path, per_channel: bool, quant_format) -> tuple:
    """(path of the quantized model, a random input); the float model and calibration data from fixed seeds."""
    rng = np.random.default_rng(0)
    float_path, path = tmp_path / "float.onnx", tmp_path / f"quantized_{per_channel}.onnx"
    _float_model(float_path, rng)
    quantization.quantize_static(str(float_path), str(path), _Reader(rng), quant_format=quant_format,
                                 per_channel=per_channel, activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8)
    return path, np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)


def _output_step(path) -> float:
    """The scale of the quantizer on the model's output y."""
    model = onnx.load(path)
    return float(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "y_scale")))


@pytest.mark.parametrize("per_channel", [False, True])
def test_qdq_model_batchnorm_folds_and_matches_onnxruntime(tmp_path, per_channel):
    path, x = quantized_model(tmp_path, per_channel, quantization.QuantFormat.QDQ)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # without the rule, the engine runs the model's Q/DQ as written: onnxruntime's numbers exactly, BN unfolded
    unfolded = tk.Builder(tk.BuilderConfig(passes=pipeline_with("-fold_qdq"))).build(parse_onnx(path))
    np.testing.assert_array_equal(unfolded.create_execution_context().execute({"x": x})["y"], expected)
    assert "scale" in [s.kind for s in unfolded.plan.steps]
    engine = tk.Builder().build(parse_onnx(path))
    kinds = [s.kind for s in engine.plan.steps]
    counts = engine.plan.build_info["pass_counts"]
    assert counts["fold_qdq.pair_before_scale"] == 1 and "scale" not in kinds  # BatchNorm folded into conv1
    # the 8 other pairs are pointwise arithmetic (fused with the Add of the shift): no quantize/dequantize step
    assert counts["fold_qdq.pair_to_pointwise"] == 8 and not {"quantize_linear", "dequantize_linear"} & set(kinds)
    assert len(kinds) == 13 < len(unfolded.plan.steps) == 26
    # the pair dropped before the BatchNorm rounded conv1's output (by at most half a step of its quantizer); both
    # outputs lie on the output quantizer's grid, and differ by at most 2 of its steps, less on average than the
    # quantized model's own distance from the float model
    step, context = _output_step(path), engine.create_execution_context()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    float_session = ort.InferenceSession(str(tmp_path / "float.onnx"), providers=["CPUExecutionProvider"])
    steps_apart, quantization_error = [], []
    for seed in range(5):
        x = np.random.default_rng(seed).standard_normal((2, 3, 12, 12)).astype(np.float32)
        reference = session.run(None, {"x": x})[0]
        difference = np.abs(context.execute({"x": x})["y"] - reference) / step
        np.testing.assert_allclose(difference, np.round(difference), atol=1e-3)
        steps_apart.append(np.round(difference))
        quantization_error.append(np.abs(reference - float_session.run(None, {"x": x})[0]) / step)
    assert np.max(steps_apart) <= 2 and np.mean(np.concatenate(steps_apart) == 0) >= 0.4
    assert np.mean(steps_apart) < np.mean(quantization_error)  # measured: 0.5 and 0.9 steps (per channel)


def test_pair_that_acts_as_a_relu_is_kept(tmp_path):
    """onnxruntime drops relu2 (its quantizer's zero point -128 clamps at zero instead): that pair must stay."""
    path, x = quantized_model(tmp_path, False, quantization.QuantFormat.QDQ)
    model = onnx.load(path)
    assert "Relu" not in [n.op_type for n in model.graph.node]  # the premise: onnxruntime folded both ReLUs
    engine = tk.Builder().build(parse_onnx(path))
    assert engine.plan.build_info["pass_counts"]["fold_qdq.pair_before_scale"] == 1  # conv1's pair only
    # r2's pair became pointwise arithmetic whose clip is the ReLU: [-128 + 128, 127 + 128] = [0, 255] steps
    programs = [" ".join(s.op.program) for s in engine.plan.steps if s.kind == "fused_pointwise"]
    assert any("clip" in program and " 0.0 255.0" in program for program in programs), programs


def test_int8_build_of_a_qdq_model_uses_its_own_scales(tmp_path):
    """As TensorRT: a network with Q/DQ layers is explicitly quantized, so an INT8 build calibrates nothing."""
    from tensorkiln.quant.int8 import Int8Options
    from tensorkiln.quant.precision import Precision

    path, x = quantized_model(tmp_path, True, quantization.QuantFormat.QDQ)
    builder = tk.Builder(tk.BuilderConfig(precision=Precision.INT8, int8=Int8Options(None)))
    engine = builder.build(parse_onnx(path))
    assert engine.plan.build_info["pass_counts"]["quantize_int8.explicitly_quantized"] == 1
    assert any("explicitly quantized" in line for line in builder.build_log)
    fp32 = tk.Builder().build(parse_onnx(path)).create_execution_context().execute({"x": x})["y"]
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})["y"], fp32)


def test_modelopt_style_weight_qdq_folds_with_the_batchnorm(tmp_path):
    """TensorRT-style explicit quantization (pytorch-quantization, ModelOpt): float weights through Q -> DQ
    (per channel, int8, zero point 0), the input through Q -> DQ, then conv -> BatchNorm -> Relu. The weights' pair
    folds to constants, BatchNorm folds into the convolution, and the result matches onnxruntime."""
    rng = np.random.default_rng(7)
    c = 6
    weights = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
    w_scale = np.abs(weights).reshape(c, -1).max(1) / 127
    initializers = {"w": weights, "w_scale": w_scale, "w_zero": np.zeros(c, np.int8), "x_scale": np.float32(0.02),
                    "x_zero": np.int8(0), "gamma": rng.uniform(0.5, 1.5, c), "beta": rng.standard_normal(c) * 0.1,
                    "mean": rng.standard_normal(c) * 0.1, "var": rng.uniform(0.5, 1.5, c)}
    node = helper.make_node
    nodes = [node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
             node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], axis=0),
             node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"], axis=0),
             node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"]),
             node("Relu", ["b"], ["y"])]
    tensors = []
    for name, value in initializers.items():
        value = np.asarray(value)
        tensor = numpy_helper.from_array(value.astype(np.float32) if value.dtype == np.float64 else value, name)
        tensors.append(tensor)
    graph = helper.make_graph(nodes, "modelopt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "modelopt_style.onnx"
    onnx.save(model, path)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    engine = tk.Builder().build(parse_onnx(path))
    kinds = [s.kind for s in engine.plan.steps]
    assert kinds == ["fused_pointwise", "fused_convolution"]  # the input's pair; BatchNorm and Relu folded in
    got = engine.create_execution_context().execute({"x": x})["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # the input's pair as pointwise arithmetic gives the quantize/dequantize values to the bit
    as_written = tk.Builder(tk.BuilderConfig(passes=pipeline_with("-fold_qdq"))).build(parse_onnx(path))
    np.testing.assert_array_equal(got, as_written.create_execution_context().execute({"x": x})["y"])


def test_fp8_e4m3_qdq_model_matches_onnxruntime(tmp_path):
    """quantize_static with FP8 E4M3 activations and weights: the pairs round to a float grid, so fold_qdq leaves
    them as written (no pointwise rewrite, no BatchNorm rule), and the engine gives onnxruntime's numbers."""
    rng = np.random.default_rng(0)
    float_path, path = tmp_path / "float.onnx", tmp_path / "fp8.onnx"
    _float_model(float_path, rng)
    quantization.quantize_static(str(float_path), str(path), _Reader(rng), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=quantization.QuantType.QFLOAT8E4M3FN,
                                 weight_type=quantization.QuantType.QFLOAT8E4M3FN,
                                 calibrate_method=quantization.CalibrationMethod.Distribution)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    engine = tk.Builder().build(parse_onnx(path))
    assert "fold_qdq.pair_to_pointwise" not in engine.plan.build_info["pass_counts"]
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})["y"], expected)
