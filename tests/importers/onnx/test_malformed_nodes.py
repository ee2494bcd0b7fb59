"""Nodes that break their operator's ONNX schema (as the fuzzer makes them): a required input missing or empty,
too many inputs or outputs, an attribute of another type than the spec's, a required attribute absent. Each is one
ModelFormatError naming the node and what the spec wants, before the converter could fail with a TypeError or an
AttributeError on it."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.onnx import parse_onnx


def _model(node: onnx.NodeProto, extra_initializers=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    y = helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)
    weights = [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w"), *extra_initializers]
    return helper.make_model(helper.make_graph([node], "malformed", [x], [y], weights),
                             opset_imports=[helper.make_opsetid("", 17)])


def _with_attribute(node: onnx.NodeProto, attribute: AttributeProto) -> onnx.NodeProto:
    node.attribute.append(attribute)
    return node


def _tensor_attribute(name: str) -> AttributeProto:
    return helper.make_attribute(name, numpy_helper.from_array(np.array([1, 1], np.int64)))


CASES = {
    "missing_required_input": (helper.make_node("Conv", ["x"], ["y"], name="n"),
                               "has 1 input(s); Conv needs at least 2"),
    "empty_required_input": (helper.make_node("Conv", ["x", ""], ["y"], name="n"),
                             "input 1 (W) is empty, but Conv requires it"),
    "too_many_inputs": (helper.make_node("Relu", ["x", "w"], ["y"], name="n"), "has 2 inputs; Relu takes at most 1"),
    "too_many_outputs": (helper.make_node("Relu", ["x"], ["y", "z"], name="n"),
                         "has 2 outputs; Relu has at most 1"),
    "ints_given_as_int": (helper.make_node("Conv", ["x", "w"], ["y"], name="n", strides=2),
                          "attribute 'strides' is of type INT; the ONNX spec of Conv makes it INTS"),
    "ints_given_as_tensor": (_with_attribute(helper.make_node("Conv", ["x", "w"], ["y"], name="n"),
                                             _tensor_attribute("kernel_shape")),
                             "attribute 'kernel_shape' is of type TENSOR; the ONNX spec of Conv makes it INTS"),
    "float_given_as_floats": (helper.make_node("LeakyRelu", ["x"], ["y"], name="n", alpha=[0.1, 0.2]),
                              "attribute 'alpha' is of type FLOATS; the ONNX spec of LeakyRelu makes it FLOAT"),
    "int_given_as_string": (helper.make_node("Softmax", ["x"], ["y"], name="n", axis="1"),
                            "attribute 'axis' is of type STRING; the ONNX spec of Softmax makes it INT"),
    "required_attribute_absent": (helper.make_node("Concat", ["x", "x"], ["y"], name="n"),
                                  "has no 'axis' attribute, which Concat requires"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_node_is_one_clear_error(case):
    node, phrase = CASES[case]
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(_model(node))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"ONNX node 'n' ({node.op_type}, opset 17): {phrase}"), message


def test_unknown_attributes_and_optional_inputs_are_still_accepted():
    """The checks refuse only what breaks the schema: an omitted optional input (Conv's bias) and an attribute the
    spec does not know (exporters add some) build as before."""
    node = helper.make_node("Conv", ["x", "w", ""], ["y"], name="n", exporter_note="kept")
    assert parse_onnx(_model(node)).ir.outputs[0].shape == (1, 3, 3, 3)
