"""onnxruntime's quantized operators (com.microsoft and QOperator format), each in a one-node model on random
8-bit inputs, against onnxruntime's own kernels; and a quantize_static QOperator model end to end."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

ort = pytest.importorskip("onnxruntime")
U8, I8 = np.uint8, np.int8


def _run_both(tmp_path, node, feeds: dict, constants: dict, output_shape, output_dtype):
    """(onnxruntime's output, tensorkiln's output) of a one-node model."""
    to_onnx = {np.dtype(U8): TensorProto.UINT8, np.dtype(I8): TensorProto.INT8, np.dtype(np.float32): TensorProto.FLOAT,
               np.dtype(np.int32): TensorProto.INT32}
    inputs = [helper.make_tensor_value_info(name, to_onnx[value.dtype], value.shape) for name, value in feeds.items()]
    initializers = [numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items()]
    output = helper.make_tensor_value_info("y", to_onnx[np.dtype(output_dtype)], output_shape)
    graph = helper.make_graph([node], "one", inputs, [output], initializers)
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path = tmp_path / f"{node.op_type}.onnx"
    onnx.save(model, path)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = tk.Builder().build(parse_onnx(path)).create_execution_context().execute(feeds)["y"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    return expected, got


def _within_one_level(expected, got):
    difference = np.abs(expected.astype(np.int32) - got.astype(np.int32))
    assert difference.max() <= 1 and np.mean(difference == 0) >= 0.9, (difference.max(), np.mean(difference == 0))


def _q(rng, shape, dtype=U8):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _qparams(prefix, scale, zero_point, dtype=U8):
    return {f"{prefix}_scale": np.array(scale, np.float32), f"{prefix}_zp": np.array(zero_point, dtype)}


@pytest.mark.parametrize("op_type", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dtype", [U8, I8])
def test_qlinear_add_mul(tmp_path, op_type, dtype):
    rng = np.random.default_rng(0)
    zero = 128 if dtype is U8 else 0
    feeds = {"a": _q(rng, (2, 3, 5, 7), dtype), "b": _q(rng, (3, 1, 7), dtype)}  # broadcast
    constants = {**_qparams("a", 0.05, zero + 3, dtype), **_qparams("b", 0.02, zero - 5, dtype),
                 **_qparams("c", 0.09 if op_type == "QLinearAdd" else 0.6, zero + 1, dtype)}
    node = helper.make_node(op_type, ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "c_scale", "c_zp"], ["y"],
                            domain="com.microsoft")
    _within_one_level(*_run_both(tmp_path, node, feeds, constants, (2, 3, 5, 7), dtype))


def test_qlinear_concat(tmp_path):
    rng = np.random.default_rng(1)
    feeds = {"x0": _q(rng, (2, 3, 4)), "x1": _q(rng, (2, 5, 4))}
    constants = {**_qparams("y", 0.04, 120), **_qparams("x0", 0.03, 128), **_qparams("x1", 0.05, 100)}
    node = helper.make_node("QLinearConcat", ["y_scale", "y_zp", "x0", "x0_scale", "x0_zp", "x1", "x1_scale", "x1_zp"],
                            ["y"], axis=1, domain="com.microsoft")
    _within_one_level(*_run_both(tmp_path, node, feeds, constants, (2, 8, 4), U8))


@pytest.mark.parametrize("op_type, attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.13}),
                                            ("QLinearSoftmax", {"axis": -1, "opset": 13}),
                                            ("QLinearSoftmax", {"axis": 1, "opset": 12})])
def test_qlinear_unary(tmp_path, op_type, attrs):
    rng = np.random.default_rng(2)
    feeds = {"x": _q(rng, (2, 3, 11))}
    y_scale = 1 / 256 if op_type in ("QLinearSigmoid", "QLinearSoftmax") else 0.05
    constants = {**_qparams("x", 0.04, 128), **_qparams("y", y_scale, 0 if y_scale < 0.01 else 128)}
    node = helper.make_node(op_type, ["x", "x_scale", "x_zp", "y_scale", "y_zp"], ["y"], domain="com.microsoft",
                            **attrs)
    _within_one_level(*_run_both(tmp_path, node, feeds, constants, (2, 3, 11), U8))


@pytest.mark.parametrize("channels_last", [0, 1])
def test_qlinear_average_pools(tmp_path, channels_last):
    rng = np.random.default_rng(3)
    shape = (2, 9, 11, 4) if channels_last else (2, 4, 9, 11)
    feeds = {"x": _q(rng, shape)}
    constants = {**_qparams("x", 0.04, 128), **_qparams("y", 0.01, 130)}
    pool = helper.make_node("QLinearAveragePool", ["x", "x_scale", "x_zp", "y_scale", "y_zp"], ["y"],
                            kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], count_include_pad=0,
                            channels_last=channels_last, domain="com.microsoft")
    out = (2, 5, 6, 4) if channels_last else (2, 4, 5, 6)
    _within_one_level(*_run_both(tmp_path, pool, feeds, constants, out, U8))
    global_pool = helper.make_node("QLinearGlobalAveragePool", ["x", "x_scale", "x_zp", "y_scale", "y_zp"], ["y"],
                                   channels_last=channels_last, domain="com.microsoft")
    out = (2, 1, 1, 4) if channels_last else (2, 4, 1, 1)
    _within_one_level(*_run_both(tmp_path, global_pool, feeds, constants, out, U8))


@pytest.mark.parametrize("per_column, trans_b, quantized_output", [(False, 0, True), (True, 1, True),
                                                                    (True, 0, False)])
def test_qgemm(tmp_path, per_column, trans_b, quantized_output):
    rng = np.random.default_rng(4)
    feeds = {"a": _q(rng, (5, 16))}
    b = _q(rng, (7, 16) if trans_b else (16, 7), I8)
    b_scale = rng.uniform(0.002, 0.01, 7 if per_column else ()).astype(np.float32)
    constants = {**_qparams("a", 0.03, 128), "b": b, "b_scale": b_scale,
                 "b_zp": np.zeros(7 if per_column else (), I8), "c": rng.integers(-3000, 3000, 7).astype(np.int32)}
    names = ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "c"]
    if quantized_output:
        constants.update(_qparams("y", 0.02, 120))
        names += ["y_scale", "y_zp"]
    node = helper.make_node("QGemm", names, ["y"], transB=trans_b, alpha=0.75, domain="com.microsoft")
    expected, got = _run_both(tmp_path, node, feeds, constants, (5, 7), U8 if quantized_output else np.float32)
    if quantized_output:
        _within_one_level(expected, got)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_column", [False, True])
def test_dynamic_quantize_matmul(tmp_path, per_column):
    rng = np.random.default_rng(5)
    feeds = {"a": rng.standard_normal((3, 4, 16)).astype(np.float32)}
    constants = {"b": _q(rng, (16, 6), I8), "b_scale": rng.uniform(0.002, 0.01, 6 if per_column else ()).astype(
        np.float32), "b_zp": np.zeros(6 if per_column else (), I8), "bias": rng.standard_normal(6).astype(np.float32)}
    node = helper.make_node("DynamicQuantizeMatMul", ["a", "b", "b_scale", "b_zp", "bias"], ["y"],
                            domain="com.microsoft")
    expected, got = _run_both(tmp_path, node, feeds, constants, (3, 4, 6), np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_quantize_static_qoperator_model_matches_onnxruntime(tmp_path):
    """quantize_static in the QOperator format writes QLinearConv, QLinearAdd, QLinearGlobalAveragePool, QGemm."""
    from tests.passes.test_qdq_fold import quantized_model
    quantization = pytest.importorskip("onnxruntime.quantization")

    path, x = quantized_model(tmp_path, True, quantization.QuantFormat.QOperator)
    written = {n.op_type for n in onnx.load(path).graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm"} <= written
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = tk.Builder().build(parse_onnx(path)).create_execution_context().execute({"x": x})["y"]
    step = float(numpy_helper.to_array(next(i for i in onnx.load(path).graph.initializer if i.name == "y_scale")))
    assert np.abs(got - expected).max() <= 1.001 * step  # the output is dequantized: within one of its steps


@pytest.mark.parametrize("per_column", [False, True])
def test_dynamic_quantize_lstm(tmp_path, per_column):
    """onnxruntime quantizes X and the hidden state at run time; tensorkiln dequantizes only the weights, so the two
    agree as 8-bit activations allow: SQNR over 30 dB (measured 41 and 45)."""
    from tensorkiln.quant.sensitivity import sqnr_db

    rng = np.random.default_rng(8)
    hidden, inputs = 6, 5
    gates = 4 * hidden
    scale_shape = (1, gates) if per_column else (1,)
    constants = {"w": _q(rng, (1, inputs, gates), I8), "r": _q(rng, (1, hidden, gates), I8),
                 "bias": (rng.standard_normal((1, 2 * gates)) * 0.1).astype(np.float32),
                 "w_scale": rng.uniform(0.005, 0.02, scale_shape).astype(np.float32), "w_zp": np.zeros(scale_shape, I8),
                 "r_scale": rng.uniform(0.005, 0.02, scale_shape).astype(np.float32), "r_zp": np.zeros(scale_shape, I8)}
    feeds = {"x": rng.standard_normal((7, 2, inputs)).astype(np.float32)}
    node = helper.make_node("DynamicQuantizeLSTM", ["x", "w", "r", "bias", "", "", "", "", "w_scale", "w_zp",
                                                    "r_scale", "r_zp"], ["y"], hidden_size=hidden,
                            domain="com.microsoft")
    expected, got = _run_both(tmp_path, node, feeds, constants, (7, 1, 2, hidden), np.float32)
    assert sqnr_db(torch.from_numpy(expected), torch.from_numpy(got)) > 30
