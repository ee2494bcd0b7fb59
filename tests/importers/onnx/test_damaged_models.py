"""Damaged or malformed ONNX models found by fuzzing the importer: each is one ModelFormatError line naming where
the problem is, never a traceback from inside a converter (ZeroDivisionError, IndexError, TypeError) or a name
that only fails when the engine is saved."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from onnx_case import assert_close, run_onnxruntime
from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.onnx import parse_onnx


def _model(nodes, inputs, output: str, initializers=(), opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(
        helper.make_graph(nodes, "damaged", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                          list(initializers)), opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _refused(model, *phrases: str) -> str:
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(model)
    message = str(error.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    return message


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])


@pytest.mark.parametrize("original, damaged, field", [
    (b"damaged", b"dam\xe9ged", "ModelProto.graph.name"),
    (b"Relu", b"R\xeflu", "ModelProto.graph.node.op_type"),
    (b"hidden", b"hid\xffen", "ModelProto.graph.node.in"),  # (the output of one node, the input of the next)
])
def test_a_name_that_is_not_utf8_is_refused_at_load(original, damaged, field):
    """A flipped bit in a name: protobuf hands it back as bytes, which once failed only when the engine was saved."""
    nodes = [helper.make_node("Relu", ["x"], ["hidden"], name="relu"), helper.make_node("Neg", ["hidden"], ["y"])]
    data = _model(nodes, [X], "y").SerializeToString()
    assert data.count(original) >= 1
    _refused(data.replace(original, damaged), f"field {field}", "not UTF-8 text")


def test_slice_of_a_0d_tensor_and_step_0():
    scalar = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])
    constants = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
                 (("starts", 0), ("ends", 1), ("axes", 0), ("steps", 1), ("zero", 0))]
    node = helper.make_node("Slice", ["s", "starts", "ends", "axes"], ["y"], name="slice")
    _refused(_model([node], [scalar], "y", constants), "ONNX node 'slice'", "axes [0] are not distinct axes of the "
                                                                           "rank-0 input")
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "zero"], ["y"], name="slice")
    _refused(_model([node], [X], "y", constants), "steps [0] hold a 0")


def test_integer_input_of_a_float_type():
    """Slice's starts as float32 holding NaN (once int(nan): ValueError): the schema's type constraint refuses it."""
    starts = numpy_helper.from_array(np.array([np.nan], np.float32), "starts")
    ends = numpy_helper.from_array(np.array([2], np.float32), "ends")
    node = helper.make_node("Slice", ["x", "starts", "ends"], ["y"], name="slice")
    _refused(_model([node], [X], "y", [starts, ends]), "input 1 'starts' is tensor(float), which the ONNX spec of "
                                                      "Slice does not allow for starts")


def test_operator_newer_than_the_models_opset():
    """AffineGrid (opset 20) in an opset-17 model once reached its converter, which read a missing input."""
    theta = helper.make_tensor_value_info("theta", TensorProto.FLOAT, [1, 2, 3])
    node = helper.make_node("AffineGrid", ["theta"], ["y"], name="grid")
    _refused(_model([node], [theta], "y", opset=17), "ONNX node 'grid'",
             "AffineGrid is not an operator of ONNX opset 17 (it first appears in opset 20)")


def test_bitwise_operator_on_float_input():
    node = helper.make_node("BitwiseNot", ["x"], ["y"], name="not")
    _refused(_model([node], [X], "y", opset=18), "input 0 'x' is tensor(float), which the ONNX spec of BitwiseNot "
                                                "does not allow")


def test_axis_out_of_range():
    """Softmax axis -2**63 once passed the importer (Python's % folded it into range) and made an engine whose
    own loader refused it."""
    node = helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=-2**63)
    _refused(_model([node], [X], "y"), f"attribute axis = {-2**63} is out of range for input 0 of rank 3")


def test_batch_normalization_statistics_of_the_wrong_size():
    values = [numpy_helper.from_array(np.ones(size, np.float32), name) for name, size in
              (("scale", 3), ("bias", 3), ("mean", 2), ("var", 3))]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], name="bn")
    _refused(_model([node], [X], "y", values), "input 3 ('mean') has shape [2]; it needs one value per channel ([3])")


def test_group_normalization_without_num_groups():
    values = [numpy_helper.from_array(np.ones(3, np.float32), name) for name in ("scale", "bias")]
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], name="gn")
    _refused(_model([node], [X], "y", values, opset=18), "ONNX node 'gn'", "has no 'num_groups' attribute")
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], name="gn", num_groups=2)
    _refused(_model([node], [X], "y", values, opset=21), "num_groups = 2 must be positive and divide the 3 channels")


def test_lstm_without_hidden_size_takes_it_from_r():
    """hidden_size is optional in the spec: it is R's last dimension (the converter once called int(None))."""
    rng = np.random.default_rng(0)
    hidden = 5
    weights = [numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, 4)).astype(np.float32) * 0.3, "W"),
               numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.3, "R")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2, 4])]
    without = _model([helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm")], inputs, "y", weights)
    with_size = _model([helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=hidden)], inputs,
                       "y", weights)
    feed = {"x": rng.standard_normal((3, 2, 4)).astype(np.float32)}
    engine = tk.Runtime().deserialize(tk.Builder().build(parse_onnx(without)).serialize())
    actual = engine.create_execution_context().execute(feed)["y"]
    assert_close(actual, run_onnxruntime(with_size, feed)[0], "LSTM without hidden_size")


def test_a_name_with_a_control_character_is_refused():
    """A newline in a node name once reached the engine file, whose loader refused the engine just built."""
    node = helper.make_node("Relu", ["x"], ["y"], name="t0\nimport this")
    _refused(_model([node], [X], "y"), "'t0\\nimport this'", "ModelProto.graph.node.name", "control character")


def test_resize_scales_of_another_rank():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize")
    _refused(_model([node], [X], "y", [scales]), "scales [1.0, 1.0, 2.0, 2.0] has 4 values for an input of rank 3")


def test_inputs_of_one_type_variable_with_different_dtypes():
    """An initializer whose data_type was edited to int32: MatMul(float, int32) once built and failed at run time."""
    weights = numpy_helper.from_array(np.ones((4, 2), np.int32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")
    _refused(_model([node], [X], "y", [weights]), "inputs of one type (T in the ONNX spec of MatMul) disagree",
             "input 0 'x' is FLOAT, input 1 'w' is INT32")


def test_unsupported_node_without_outputs_is_listed():
    node = helper.make_node("Bernoulli", ["x"], [], name="")
    model = _model([node, helper.make_node("Relu", ["x"], ["y"])], [X], "y")
    with pytest.raises(tk.errors.UnsupportedOpError, match=r"Bernoulli at node '\?'"):
        parse_onnx(model)


def test_upsample_with_0d_scales():
    scales = numpy_helper.from_array(np.array(2.0, np.float32), "scales")
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], name="up")
    _refused(_model([node], [X], "y", [scales], opset=9), "scales [2.0] has 1 values for an input of rank 3")


def test_pad_with_pads_of_another_rank():
    pads = numpy_helper.from_array(np.array([2, -1], np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")
    _refused(_model([node], [X], "y", [pads]), "pads [2, -1] have 2 values; an input of rank 3 needs 6")


@pytest.mark.parametrize("depth", [0.0, -2.0, np.nan])
def test_one_hot_depth_not_positive(depth):
    values = [numpy_helper.from_array(np.array([depth], np.float32), "depth"),
              numpy_helper.from_array(np.array([0, 1], np.float32), "values")]
    indices = helper.make_tensor_value_info("i", TensorProto.INT64, [3])
    node = helper.make_node("OneHot", ["i", "depth", "values"], ["y"], name="onehot")
    _refused(_model([node], [indices], "y", values), "ONNX node 'onehot'", "must be one positive number")


def test_clip_bounds_that_are_not_scalars():
    bounds = [numpy_helper.from_array(np.zeros((2, 2), np.float32), "low")]
    node = helper.make_node("Clip", ["x", "low"], ["y"], name="clip")
    _refused(_model([node], [X], "y", bounds), "its min has shape [2, 2]; Clip takes a scalar min")


def test_dimension_name_with_a_control_character():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t0\nimport this", 3])
    _refused(_model([helper.make_node("Relu", ["x"], ["y"])], [x], "y"), "dim_param", "control character")
