"""Nodes without a converter: a fallback node (allow_fallback, onnx's reference implementation) whose output is a
0-d tensor keeps shape () (it came back as (1,)), and the error for a node outside the default domain names the op,
node, domain and that domain's opset and suggests a plugin, never --allow-fallback, which cannot run it."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorkiln as tk
from onnx_case import assert_close, run_onnxruntime
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.importers.onnx.registry import find_converter


def _loss_model(reduction: str) -> onnx.ModelProto:
    """NegativeLogLikelihoodLoss (no converter: a training op) whose mean / sum reduction is a 0-d tensor."""
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 5])
    target = helper.make_tensor_value_info("target", TensorProto.INT64, [4])
    loss = helper.make_tensor_value_info("loss", TensorProto.FLOAT, None)
    node = helper.make_node("NegativeLogLikelihoodLoss", ["scores", "target"], ["loss"], name="nll",
                            reduction=reduction)
    model = helper.make_model(helper.make_graph([node], "loss", [scores, target], [loss]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("reduction, shape", [("mean", ()), ("sum", ()), ("none", (4,))])
def test_fallback_output_keeps_its_shape(reduction, shape):
    assert find_converter("", "NegativeLogLikelihoodLoss") is None  # precondition: it runs as a fallback layer
    model = _loss_model(reduction)
    rng = np.random.default_rng(0)
    feed = {"scores": rng.standard_normal((4, 5)).astype(np.float32), "target": np.array([0, 4, 2, 1], np.int64)}
    network = parse_onnx(model, allow_fallback=True)
    assert [layer.op.KIND for layer in network.ir.layers] == ["onnx_fallback"]
    engine = tk.Runtime().deserialize(tk.Builder().build(network).serialize())  # through the engine file
    actual = engine.create_execution_context().execute(feed)["loss"]
    (expected,) = run_onnxruntime(model, feed)
    assert actual.shape == expected.shape == shape
    assert_close(actual, expected, f"NegativeLogLikelihoodLoss (reduction={reduction}) as a fallback layer")


def _model(nodes, opsets: dict[str, int]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "domains", [x], [y]),
                             opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()])


QUICK_GELU = helper.make_node("QuickGelu", ["x"], ["g"], name="quick_gelu", domain="com.microsoft")


@pytest.mark.parametrize("allow_fallback", [False, True])
def test_other_domain_names_op_node_domain_and_opset_and_suggests_a_plugin(allow_fallback):
    model = _model([QUICK_GELU], {"": 17, "com.microsoft": 1})
    with pytest.raises(UnsupportedOpError) as error:
        parse_onnx(model, allow_fallback=allow_fallback)
    message = str(error.value)
    assert "\n" not in message
    assert "QuickGelu (domain com.microsoft) at node 'quick_gelu' (com.microsoft opset 1)" in message
    assert "register_plugin('QuickGelu')" in message
    assert "allow-fallback" not in message and "allow_fallback" not in message  # it cannot help here


def test_default_domain_op_still_suggests_allow_fallback_beside_another_domain():
    """A model with both: the standard op is offered the fallback, the com.microsoft one only a plugin."""
    bernoulli = helper.make_node("Bernoulli", ["g"], ["b"], name="coin")
    model = _model([QUICK_GELU, bernoulli], {"": 17, "com.microsoft": 1})
    with pytest.raises(UnsupportedOpError) as error:
        parse_onnx(model)
    message = str(error.value)
    assert "Bernoulli at node 'coin'" in message
    assert "QuickGelu (domain com.microsoft) at node 'quick_gelu' (com.microsoft opset 1)" in message
    standard, other = message.split("Operators outside the default ONNX domain")
    assert "For the standard ones (['Bernoulli']): build with allow_fallback (--allow-fallback)" in standard
    assert "allow-fallback" not in other and "Bernoulli" not in other and "register_plugin('QuickGelu')" in other
    with pytest.raises(UnsupportedOpError) as error:  # with the fallback, only the com.microsoft node remains
        parse_onnx(model, allow_fallback=True)
    assert "Bernoulli" not in str(error.value) and "QuickGelu" in str(error.value)


def test_other_domain_not_imported_is_said():
    model = _model([QUICK_GELU], {"": 17})
    with pytest.raises(UnsupportedOpError, match=r"at node 'quick_gelu' \(com.microsoft opset \?\)"):
        parse_onnx(model)
