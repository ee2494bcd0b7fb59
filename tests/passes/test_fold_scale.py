"""fold_scale: BatchNormalization, Scale and per-channel Mul/Div/Add/Sub by constants fold into the weights and bias
of the convolution, deconvolution, fully connected layer or constant matrix multiply before them; structure
(counts, kinds) and numerics (onnxruntime, or the network built without the pass)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.ir import ops
from tensorkiln.ir.ops import ElementWiseOperation as E
from tensorkiln.passes.manager import DEFAULT_PIPELINE

PASSES = ("fold_constants", "fold_scale", "remove_dead_layers")
RTOL = 1e-5  # FP32: max |a - b| over max |b|
RNG = np.random.default_rng(7)


def _random(*shape, low=None):
    value = RNG.standard_normal(shape).astype(np.float32)
    return value if low is None else (np.abs(value) + low).astype(np.float32)


def _assert_close(actual, expected):
    assert actual.shape == expected.shape
    error = np.max(np.abs(actual.astype(np.float64) - expected)) / max(np.max(np.abs(expected)), 1e-12)
    assert error <= RTOL, f"relative error {error:.2e}"


def _counts(engine):
    return {k: v for k, v in engine.plan.build_info["pass_counts"].items() if k.startswith("fold_scale")}


# ---- ONNX models, checked against onnxruntime --------------------------------------------------------------
def _onnx_model(nodes, x_shape, weights: dict, outputs=("y",), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                              [numpy_helper.from_array(value, name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model


def _check_onnx(model, x_shape, passes=PASSES):
    """Build with `passes`, compare every output with onnxruntime; return (counts, step kinds, engine)."""
    feed = {"x": _random(*x_shape)}
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    engine = tk.Builder(tk.BuilderConfig(passes=passes, debug=True)).build(parse_onnx(model))
    produced = engine.create_execution_context().execute(feed)
    assert list(produced) == [o.name for o in model.graph.output]  # the output names are kept
    for output, reference in zip(model.graph.output, expected):
        _assert_close(produced[output.name], reference)
    return _counts(engine), [s.kind for s in engine.plan.steps], engine


def _bn_weights(channels, prefix="bn"):
    return {f"{prefix}_scale": _random(channels), f"{prefix}_bias": _random(channels),
            f"{prefix}_mean": _random(channels), f"{prefix}_var": _random(channels, low=0.5)}


def _bn(x, y, prefix="bn"):
    return helper.make_node("BatchNormalization", [x, *(f"{prefix}_{n}" for n in ("scale", "bias", "mean", "var"))],
                            [y], epsilon=1e-3, name=prefix)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("group", [1, 5])
def test_conv_batchnorm_folds(with_bias, group):
    weights = {"w": _random(10, 5 // group, 3, 3), **_bn_weights(10)}
    inputs = ["x", "w"]
    if with_bias:
        weights["b"] = _random(10)
        inputs.append("b")
    nodes = [helper.make_node("Conv", inputs, ["c"], pads=[1, 0, 1, 2], strides=[2, 1], group=group, name="conv"),
             _bn("c", "y")]
    counts, kinds, engine = _check_onnx(_onnx_model(nodes, [2, 5, 13, 11], weights), (2, 5, 13, 11))
    assert counts == {"fold_scale.scale_into_convolution": 1}
    assert kinds == ["convolution"]
    step = engine.plan.steps[0]
    assert step.inputs[2] is not None  # a bias was created where the convolution had none
    assert step.fused_from == ("conv", "bn")


@pytest.mark.parametrize("group", [1, 2])
def test_deconv_batchnorm_folds_with_the_grouped_weight_layout(group):
    # ConvTranspose weight [C_in, K/group, kh, kw]: 4 input channels, K = 6 (3 per group)
    weights = {"w": _random(4, 6 // group, 3, 2), "b": _random(6), **_bn_weights(6)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[2, 1], group=group,
                              output_padding=[1, 0], name="deconv"), _bn("c", "y")]
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [1, 4, 7, 5], weights), (1, 4, 7, 5))
    assert counts == {"fold_scale.scale_into_deconvolution": 1}
    assert kinds == ["deconvolution"]


def test_gemm_batchnorm1d_folds_into_the_matrix_and_its_bias_add():
    weights = {"w": _random(7, 9), "c": _random(7), **_bn_weights(7)}
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=1, alpha=0.5), _bn("g", "y")]
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [3, 9], weights), (3, 9))
    # Gemm is a matrix multiply, alpha a Mul and the bias an Add: alpha and the BatchNorm fold into both
    assert counts == {"fold_scale.mul_into_matrix_multiply": 1, "fold_scale.scale_into_matrix_multiply": 1}
    assert kinds == ["matrix_multiply", "elementwise"]


def test_matmul_times_a_per_column_constant_then_plus_one():
    weights = {"w": _random(9, 7), "s": _random(7), "t": _random(1, 7)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Mul", ["s", "m"], ["p"]),
             helper.make_node("Add", ["p", "t"], ["y"])]
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [2, 3, 9], weights), (2, 3, 9))
    # the Add is the matrix multiply's bias: it stays for fuse_vertical
    assert counts == {"fold_scale.mul_into_matrix_multiply": 1}
    assert kinds == ["matrix_multiply", "elementwise"]


def test_batchnorm_spelled_out_with_elementwise_layers_folds_step_by_step():
    # (conv - mean) / std * gamma + beta with [K,1,1] and [1,K,1,1] constants, then 2 - y
    k = 7
    weights = {"w": _random(k, 3, 1, 1), "mean": _random(k, 1, 1), "std": _random(1, k, 1, 1, low=0.5),
               "gamma": _random(k, 1, 1), "beta": _random(1, k, 1, 1), "two": np.full((k, 1, 1), 2.0, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sub", ["c", "mean"], ["d"]),
             helper.make_node("Div", ["d", "std"], ["n"]), helper.make_node("Mul", ["gamma", "n"], ["s"]),
             helper.make_node("Add", ["s", "beta"], ["t"]), helper.make_node("Sub", ["two", "t"], ["y"])]
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [1, 3, 13, 11], weights), (1, 3, 13, 11))
    assert counts == {f"fold_scale.{rule}_into_convolution": 1 for rule in ("sub", "div", "mul", "add", "sub_from")}
    assert kinds == ["convolution"]


def test_default_pipeline_folds_and_fuses_a_conv_bn_relu_block():
    weights = {"w": _random(7, 3, 3, 3), **_bn_weights(7)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv1"), _bn("c", "n", "bn1"),
             helper.make_node("Relu", ["n"], ["y"], name="relu1")]
    weights = {"w": weights["w"], **_bn_weights(7, "bn1")}
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [1, 3, 13, 11], weights), (1, 3, 13, 11), DEFAULT_PIPELINE)
    assert counts == {"fold_scale.scale_into_convolution": 1}
    assert "scale" not in kinds and len(kinds) == 1


# ---- where it must not fold ---------------------------------------------------------------------------------
def test_batchnorm_after_a_conv_whose_output_has_a_second_reader_stays():
    weights = {"w": _random(7, 3, 3, 3), **_bn_weights(7)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), _bn("c", "y"), helper.make_node("Relu", ["c"], ["r"])]
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [1, 3, 13, 11], weights, outputs=("y", "r")), (1, 3, 13, 11))
    assert counts == {}
    assert kinds == ["convolution", "scale", "activation"]


def test_batchnorm_after_a_conv_whose_output_is_a_network_output_stays():
    weights = {"w": _random(7, 3, 3, 3), **_bn_weights(7)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), _bn("c", "y")]
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [1, 3, 13, 11], weights, outputs=("y", "c")), (1, 3, 13, 11))
    assert counts == {} and kinds == ["convolution", "scale"]


@pytest.mark.parametrize("shape", [(1, 1, 11, 11), (1, 7, 11, 1), (7, 1, 1, 1), (2, 7, 1, 1)])
def test_mul_by_a_constant_that_is_not_per_channel_stays(shape):
    # per pixel, per channel and column, on the batch dim, or broadcasting the batch to 2: none is a channel scale
    weights = {"w": _random(7, 3, 3, 3), "s": _random(*shape)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    counts, kinds, _ = _check_onnx(_onnx_model(nodes, [1, 3, 13, 13], weights), (1, 3, 13, 13))
    assert counts == {} and kinds == ["convolution", "elementwise"]


def test_mul_by_a_runtime_tensor_and_divide_by_zero_stay():
    weights = {"w": _random(7, 3, 3, 3), "z": np.zeros((7, 1, 1), np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "c"], ["y"]),
             helper.make_node("Conv", ["x", "w"], ["c2"]), helper.make_node("Div", ["c2", "z"], ["y2"])]
    model = _onnx_model(nodes, [1, 3, 13, 11], weights, outputs=("y", "y2"))
    engine = tk.Builder(tk.BuilderConfig(passes=PASSES, debug=True)).build(parse_onnx(model))
    assert _counts(engine) == {}


# ---- the network API: Scale layers, fully connected layers ---------------------------------------------------
def _reference_and_folded(make, x):
    folded = tk.Builder(tk.BuilderConfig(passes=PASSES, debug=True)).build(make())
    reference = tk.Builder(tk.BuilderConfig(passes=("fold_constants",))).build(make())
    got = folded.create_execution_context().execute({"x": x})
    want = reference.create_execution_context().execute({"x": x})
    for name in want:
        _assert_close(got[name], want[name])
    return _counts(folded), [s.kind for s in folded.plan.steps]


def _fc_then_scale(mode, scale_shape, power=None):
    weight, bias, shift, scale = _random(7, 20), _random(7), _random(*scale_shape), _random(*scale_shape)

    def make():  # the same weights on every call
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (3, 4, 5))
        fc = net.add_fully_connected(x, 7, weight, bias, name="fc").get_output(0)
        net.mark_output(net.add_scale(fc, mode, shift=shift, scale=scale, power=power, name="scale").get_output(0))
        return net
    return make


def test_fully_connected_then_channel_scale_folds():
    counts, kinds = _reference_and_folded(_fc_then_scale(tk.ScaleMode.CHANNEL, (7,)), _random(3, 4, 5))
    assert counts == {"fold_scale.scale_into_fully_connected": 1} and kinds == ["fully_connected"]


def test_fully_connected_then_uniform_scale_folds():
    counts, kinds = _reference_and_folded(_fc_then_scale(tk.ScaleMode.UNIFORM, (1,)), _random(3, 4, 5))
    assert counts == {"fold_scale.scale_into_fully_connected": 1} and kinds == ["fully_connected"]


def test_scale_with_a_power_stays():
    make = _fc_then_scale(tk.ScaleMode.CHANNEL, (7,), power=np.full(7, 2.0, np.float32))
    counts, kinds = _reference_and_folded(make, _random(3, 4, 5))
    assert counts == {} and kinds == ["fully_connected", "scale"]


def test_folds_chain_into_one_convolution_and_keep_the_output_name():
    weight, s_value, t_value = _random(7, 3, 3, 3), _random(1, 7, 1, 1), _random(7, 1, 1)

    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (2, 3, 13, 11))
        conv = net.add_convolution(x, 7, (3, 3), weight, name="conv").get_output(0)
        s = net.add_constant(None, s_value).get_output(0)
        t = net.add_constant(None, t_value).get_output(0)
        scaled = net.add_elementwise(conv, s, E.PROD, name="mul").get_output(0)
        shifted = net.add_layer(ops.ElementWise(E.SUM), [t, scaled], name="add", output_names=["out"])
        net.mark_output(shifted.get_output(0))
        return net
    counts, kinds = _reference_and_folded(make, _random(2, 3, 13, 11))
    assert counts == {"fold_scale.mul_into_convolution": 1, "fold_scale.add_into_convolution": 1}
    assert kinds == ["convolution"]
    engine = tk.Builder(tk.BuilderConfig(passes=PASSES)).build(make())
    assert [t.name for t in engine.plan.outputs] == ["out"]
