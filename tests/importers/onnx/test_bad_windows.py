"""Convolution and pooling nodes whose window attributes are impossible (stride, dilation or kernel 0, negative
pads, a group of 0 or one that does not divide the channels): one ModelFormatError line naming the node, the
attribute and its value, never a ZeroDivisionError traceback, a torch message, or a model that builds anyway."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.onnx import parse_onnx


def _model(op_type: str, attrs: dict, x_shape=(1, 4, 8, 8), weight_shape=(6, 4, 3, 3)) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    initializers, inputs = [], ["x"]
    if op_type.startswith("Conv"):
        initializers = [numpy_helper.from_array(np.ones(weight_shape, np.float32), "w")]
        inputs.append("w")
    node = helper.make_node(op_type, inputs, ["y"], name="bad_window", **attrs)
    return helper.make_model(helper.make_graph([node], "window", [x], [y], initializers),
                             opset_imports=[helper.make_opsetid("", 17)])


POOL = {"kernel_shape": [2, 2]}
CASES = [
    # (op, attributes, the phrase the error must hold)
    ("Conv", {"strides": [0, 1]}, "strides = [0, 1] must be positive"),
    ("Conv", {"strides": [0, 1], "auto_pad": "SAME_UPPER"}, "strides = [0, 1] must be positive"),
    ("Conv", {"dilations": [1, 0]}, "dilations = [1, 0] must be positive"),
    ("Conv", {"kernel_shape": [0, 3]}, "kernel_shape = [0, 3] must be positive"),
    ("Conv", {"pads": [0, -1, 0, 0]}, "pads = [0, -1, 0, 0] must be non-negative"),
    ("Conv", {"group": 0}, "group = 0 must be positive"),
    ("Conv", {"group": -2}, "group = -2 must be positive"),
    ("Conv", {"group": 3}, "group = 3 does not divide the 4 input channels and the 6 output channels"),
    ("Conv", {"strides": [1, 1, 1]}, "strides = [1, 1, 1] has 3 value(s)"),
    ("ConvTranspose", {"strides": [0, 2]}, "strides = [0, 2] must be positive"),
    ("ConvTranspose", {"strides": [0, 2], "auto_pad": "SAME_UPPER"}, "strides = [0, 2] must be positive"),
    ("ConvTranspose", {"dilations": [0, 1]}, "dilations = [0, 1] must be positive"),
    ("ConvTranspose", {"pads": [-1, 0, 0, 0]}, "pads = [-1, 0, 0, 0] must be non-negative"),
    ("ConvTranspose", {"group": 0}, "group = 0 must be positive"),
    ("ConvTranspose", {"group": 3}, "group = 3 does not divide the 4 input channels"),
    ("ConvTranspose", {"output_padding": [-1, 0]}, "output_padding = [-1, 0] must be non-negative"),
    ("MaxPool", {**POOL, "strides": [0, 1]}, "strides = [0, 1] must be positive"),
    ("MaxPool", {**POOL, "strides": [0, 1], "auto_pad": "SAME_LOWER"}, "strides = [0, 1] must be positive"),
    ("MaxPool", {"kernel_shape": [0, 2]}, "kernel_shape = [0, 2] must be positive"),
    ("MaxPool", {**POOL, "dilations": [0, 1]}, "dilations = [0, 1] must be positive"),
    ("MaxPool", {**POOL, "pads": [-1, 0, 0, 0]}, "pads = [-1, 0, 0, 0] must be non-negative"),
    ("MaxPool", {"strides": [1, 1]}, "has no 'kernel_shape' attribute, which MaxPool requires"),
    ("AveragePool", {**POOL, "strides": [0, 0]}, "strides = [0, 0] must be positive"),
    ("AveragePool", {**POOL, "strides": [1, 0], "auto_pad": "SAME_UPPER"}, "strides = [1, 0] must be positive"),
    ("LpPool", {**POOL, "strides": [0, 1]}, "strides = [0, 1] must be positive"),
]


@pytest.mark.parametrize("op_type, attrs, phrase", CASES,
                         ids=[f"{op}-{'-'.join(f'{k}{v}' for k, v in a.items())}" for op, a, _ in CASES])
def test_impossible_window_attribute_is_one_clear_error(op_type, attrs, phrase):
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(_model(op_type, attrs))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"ONNX node 'bad_window' ({op_type}, opset 17): ")
    assert f"attribute {phrase}" in message or phrase in message


def test_a_valid_window_still_builds():
    """The checks refuse only what is impossible: stride 2, dilation 2, pads and 2 groups build."""
    network = parse_onnx(_model("Conv", {"strides": [2, 1], "dilations": [2, 1], "pads": [1, 0, 2, 1], "group": 2},
                                weight_shape=(6, 2, 3, 3)))
    # H: (8 + 1 + 2 - (2 * (3 - 1) + 1)) // 2 + 1 = 4; W: (8 + 0 + 1 - 3) // 1 + 1 = 7
    assert network.ir.outputs[0].shape == (1, 6, 4, 7)


@pytest.mark.parametrize("op_type, weight_shape, bias_shape, phrase", [
    ("Conv", (6, 4, 3, 3), (6, 1), "bias 'b' has shape [6, 1]; it needs one value per output channel ([6])"),
    ("ConvTranspose", (4, 6, 3, 3), (4,), "bias 'b' has shape [4]; it needs one value per output channel ([6])"),
    ("ConvTranspose", (6, 4, 3, 3), None, "weight 'w' of shape [6, 4, 3, 3] does not fit an input of 4 channels"),
])
def test_weights_and_bias_that_do_not_fit(op_type, weight_shape, bias_shape, phrase):
    model = _model(op_type, {}, weight_shape=weight_shape)
    if bias_shape is not None:
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(bias_shape, np.float32), "b"))
        model.graph.node[0].input.append("b")
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(model)
    assert phrase in str(error.value) and "\n" not in str(error.value)
