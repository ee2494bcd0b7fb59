"""Nodes folded at build time (Constant, Shape, Size, ConstantOfShape, Range, EyeLike) and quantization
(QuantizeLinear, DequantizeLinear: per tensor, per axis, int8 and uint8, saturation, round half to even)
against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_case import Const, check, rand


@pytest.mark.parametrize("attr, value", [
    ("value", numpy_helper.from_array(rand(3, 7))),
    ("value", numpy_helper.from_array(np.array([4, -2, 9], np.int64))),
    ("value_float", 2.5), ("value_floats", [1.5, -2.0, 3.25]), ("value_int", 7), ("value_ints", [3, -1, 4]),
])
def test_constant(attr, value):
    check("Constant", [], opset=13, **{attr: value})


@pytest.mark.parametrize("start, end", [(None, None), (1, None), (-2, None), (0, -1), (1, 3), (-100, 100)])
def test_shape_with_start_and_end(start, end):
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    check("Shape", [rand(2, 7, 1, 3)], opset=15, **attrs)


def test_shape_before_opset_15_and_of_a_scalar():
    check("Shape", [rand(13, 1)], opset=13)
    check("Shape", [np.float32(3.0)], opset=13)


@pytest.mark.parametrize("shape", [(2, 7, 1), (13,), ()])
def test_size(shape):
    check("Size", [np.asarray(rand(*shape))], opset=13)


@pytest.mark.parametrize("value", [None, numpy_helper.from_array(np.array([1.5], np.float32)),
                                   numpy_helper.from_array(np.array([-3], np.int32)),
                                   numpy_helper.from_array(np.array([True]))])
@pytest.mark.parametrize("shape", [(2, 7), (1,), (3, 1, 5)])
def test_constant_of_shape(shape, value):
    attrs = {} if value is None else {"value": value}
    check("ConstantOfShape", [Const(np.array(shape, np.int64))], opset=20, **attrs)


@pytest.mark.parametrize("start, limit, delta, dtype", [
    (0, 7, 1, np.int64), (10, -3, -3, np.int32), (0.5, 3.7, 0.4, np.float32), (5, 5, 1, np.int64),
    (-1.0, 2.0, 1.5, np.float64),
])
def test_range(start, limit, delta, dtype):
    check("Range", [Const(np.array(start, dtype)), Const(np.array(limit, dtype)), Const(np.array(delta, dtype))],
          opset=11)


@pytest.mark.parametrize("shape, k", [((3, 3), 0), ((3, 7), 2), ((7, 3), -1), ((1, 5), 9), ((4, 4), -4)])
def test_eye_like(shape, k):
    check("EyeLike", [rand(*shape)], opset=9, k=k)


def test_eye_like_of_another_dtype():
    check("EyeLike", [rand(3, 5, dtype=np.int32, low=0, high=9)], opset=9, dtype=TensorProto.FLOAT, k=1)
    check("EyeLike", [rand(4, 2)], opset=22, dtype=TensorProto.INT64)


@pytest.mark.parametrize("zero_point", [None, np.uint8(128), np.int8(-3), np.uint8(0)])
@pytest.mark.parametrize("opset", [10, 13, 21])
def test_quantize_linear_per_tensor(opset, zero_point):
    # values on exact .5 steps check round half to even; the range checks saturation at both ends
    x = np.concatenate([rand(3, 11, low=-40, high=40), np.array([[0.5, 1.5, 2.5, -0.5, -1.5, 500, -500, 0, 3, 1, 7]],
                                                                np.float32) * 0.25])
    inputs = [x, Const(np.array(0.25, np.float32))] + ([] if zero_point is None else [Const(np.asarray(zero_point))])
    check("QuantizeLinear", inputs, opset=opset)


@pytest.mark.parametrize("axis", [1, 0, -1])
def test_quantize_linear_per_axis(axis):
    x = rand(3, 5, 7, low=-10, high=10)
    extent = x.shape[axis]
    scale = np.linspace(0.05, 0.3, extent).astype(np.float32)
    zero_point = np.arange(extent).astype(np.int8) - 2
    check("QuantizeLinear", [x, Const(scale), Const(zero_point)], opset=13, axis=axis)


def test_quantize_linear_output_dtype_without_a_zero_point():
    check("QuantizeLinear", [rand(3, 7, low=-30, high=30), Const(np.array(0.5, np.float32))], opset=21,
          output_dtype=TensorProto.INT8)


@pytest.mark.parametrize("zero_point", [None, np.uint8(131), np.int8(-7)])
@pytest.mark.parametrize("opset", [10, 13, 21])
def test_dequantize_linear_per_tensor(opset, zero_point):
    dtype = np.uint8 if zero_point is None else type(zero_point)
    info = np.iinfo(dtype)
    x = rand(4, 9, dtype=dtype, low=info.min, high=info.max)
    inputs = [x, Const(np.array(0.37, np.float32))] + ([] if zero_point is None else [Const(np.asarray(zero_point))])
    check("DequantizeLinear", inputs, opset=opset)


@pytest.mark.parametrize("axis", [1, 0, -1])
def test_dequantize_linear_per_axis(axis):
    x = rand(3, 5, 7, dtype=np.int8, low=-128, high=127)
    extent = x.shape[axis]
    check("DequantizeLinear", [x, Const(np.linspace(0.1, 0.9, extent).astype(np.float32)),
                               Const((np.arange(extent) - 1).astype(np.int8))], opset=13, axis=axis)


def test_dequantize_int32_without_a_zero_point():
    check("DequantizeLinear", [rand(3, 7, dtype=np.int32, low=-1000, high=1000), Const(np.array(0.01, np.float32))],
          opset=13)


def test_quantize_then_dequantize_is_a_fake_quantization():
    # two nodes: the pattern every Q/DQ model holds, compared end to end
    from onnx_case import run_onnxruntime, run_tensorkiln, assert_close

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 13])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                               numpy_helper.from_array(np.array(-4, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    feed = {"x": rand(2, 13, low=-8, high=8)}
    assert_close(run_tensorkiln(model, feed)[0], run_onnxruntime(model, feed)[0], "Q -> DQ")


def test_int16_quantization_at_opset_21():
    check("QuantizeLinear", [rand(3, 7, low=-400, high=400), Const(np.float32(0.01)), Const(np.int16(5))], opset=21)
    check("DequantizeLinear", [rand(3, 7, dtype=np.int16, low=-30000, high=30000), Const(np.float32(0.01)),
                               Const(np.int16(5))], opset=21)


def test_quantize_float16_input():
    check("QuantizeLinear", [rand(3, 7, low=-10, high=10, dtype=np.float16), Const(np.float16(0.1)),
                             Const(np.uint8(5))], opset=19)


def test_empty_constant_of_shape_and_a_descending_float_range():
    check("ConstantOfShape", [Const(np.array([0], np.int64))], opset=20)
    check("Range", [Const(np.float32(5)), Const(np.float32(-1.1)), Const(np.float32(-0.7))], opset=11)
    check("EyeLike", [rand(3, 5, dtype=np.float16)], opset=9, k=-1)
