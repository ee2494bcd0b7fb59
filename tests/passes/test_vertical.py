"""fuse_vertical: a convolution / deconvolution / matrix product and the pointwise layers after it become one fused
layer. Structure (the rewrite fires with asserted counts; it does not where a tensor inside the chain has a second
reader, is a network output, or where the residual has another shape) and numerics (outputs agree with the unfused
network, and with onnxruntime on ONNX models written here)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.ir.ops import ElementWiseOperation as E
from tolerances import tolerance_for

PASSES = ("fold_constants", "fuse_horizontal", "fuse_vertical", "remove_dead_layers")
UNFUSED = ("fold_constants",)
RNG = np.random.default_rng(0)  # inputs
TOL = tolerance_for("float32")
_weight_rng = [np.random.default_rng(1)]  # restarted before each network is made, so that both builds agree


def _weights(*shape, scale=0.3):
    return (_weight_rng[0].standard_normal(shape) * scale).astype(np.float32)


def _make(make):
    _weight_rng[0] = np.random.default_rng(1)
    return make()


def _feed(**shapes):
    return {name: RNG.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def _assert_close(got, want, where=""):
    np.testing.assert_allclose(got, want, rtol=TOL.rtol, atol=TOL.atol, err_msg=where)


def _build(make, feeds, passes=PASSES):
    """(fused engine, its vertical-fusion counts); its outputs agree with the network built without fusion."""
    engine = tk.Builder(tk.BuilderConfig(passes=passes, debug=True)).build(_make(make))
    reference = tk.Builder(tk.BuilderConfig(passes=UNFUSED)).build(_make(make))
    got = engine.create_execution_context().execute(feeds)
    want = reference.create_execution_context().execute(feeds)
    assert set(got) == set(want)
    for name in want:
        _assert_close(got[name], want[name], name)
    prefix = "fuse_vertical."
    counts = {k[len(prefix):]: v for k, v in engine.plan.build_info["pass_counts"].items() if k.startswith(prefix)}
    return engine, counts


def _kinds(engine):
    return [s.kind for s in engine.plan.steps]


# ---- convolution ------------------------------------------------------------------------------------------
X_SHAPE = (2, 5, 9, 7)  # awkward sizes: 5 channels in, 7 out, odd spatial dims


def _conv_chain(bias_add=True, activation=A.RELU, residual=True, post=A.RELU, conv_output=False, extra_reader=False):
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, X_SHAPE)
    r = net.add_input("r", tk.DataType.FLOAT, (2, 7, 9, 7))
    out = net.add_convolution(x, 7, (3, 3), _weights(7, 5, 3, 3), padding=1, name="conv").get_output(0)
    if conv_output:
        net.mark_output(out)
    if extra_reader:
        net.mark_output(net.add_unary(out, tk.UnaryOperation.ABS, name="other_reader").get_output(0))
    if bias_add:
        bias = net.add_constant((1, 7, 1, 1), _weights(7), name="b").get_output(0)
        out = net.add_elementwise(out, bias, E.SUM, name="bias").get_output(0)
    if activation is not None:
        out = net.add_activation(out, activation, 0.1, 0.6, name="act").get_output(0)
    if residual:
        out = net.add_elementwise(r, out, E.SUM, name="add").get_output(0)
        if post is not None:
            out = net.add_activation(out, post, name="post").get_output(0)
    net.mark_output(out)
    return net


def test_conv_bias_relu_residual_relu_become_one_layer():
    engine, counts = _build(_conv_chain, _feed(x=X_SHAPE, r=(2, 7, 9, 7)))
    assert counts == {"fused_convolution": 1, "bias_add": 1, "activation": 1, "residual": 1, "post_activation": 1}
    (step,) = engine.plan.steps
    assert step.kind == "fused_convolution" and step.fused_from == ("conv", "bias", "act", "add", "post")
    assert step.op.activation is A.RELU and step.op.residual and step.op.post_activation is A.RELU
    assert step.inputs[3] == "r" and step.inputs[4] is None  # residual, no PReLU slope
    assert step.name == "conv.fused"


@pytest.mark.parametrize("activation", list(A), ids=lambda a: a.value)
def test_every_activation_type_fuses(activation):
    make = lambda: _conv_chain(activation=activation, residual=False)  # noqa: E731
    engine, counts = _build(make, _feed(x=X_SHAPE, r=(2, 7, 9, 7)))
    assert counts == {"fused_convolution": 1, "bias_add": 1, "activation": 1}
    assert _kinds(engine) == ["fused_convolution"] and engine.plan.steps[0].op.activation is activation


def test_conv_whose_output_has_a_second_reader_keeps_its_activation():
    engine, counts = _build(lambda: _conv_chain(bias_add=False, extra_reader=True),
                            _feed(x=X_SHAPE, r=(2, 7, 9, 7)))
    assert counts == {} and _kinds(engine).count("activation") == 2 and "convolution" in _kinds(engine)


def test_conv_whose_output_is_a_network_output_is_not_fused():
    engine, counts = _build(lambda: _conv_chain(bias_add=False, conv_output=True), _feed(x=X_SHAPE, r=(2, 7, 9, 7)))
    assert counts == {} and _kinds(engine) == ["convolution", "activation", "elementwise", "activation"]


def test_a_residual_of_another_shape_is_not_fused():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, X_SHAPE)
        r = net.add_input("r", tk.DataType.FLOAT, (2, 7, 1, 1))  # broadcast over the image: not a residual
        out = net.add_convolution(x, 7, (3, 3), _weights(7, 5, 3, 3), _weights(7), name="conv").get_output(0)
        out = net.add_activation(out, A.RELU, name="act").get_output(0)
        net.mark_output(net.add_elementwise(out, r, E.SUM, name="add").get_output(0))
        return net

    engine, counts = _build(make, _feed(x=X_SHAPE, r=(2, 7, 1, 1)))
    assert counts == {"fused_convolution": 1, "activation": 1}
    assert _kinds(engine) == ["fused_convolution", "elementwise"] and not engine.plan.steps[0].op.residual


@pytest.mark.parametrize("batch", [2, 1])
def test_a_constant_that_varies_along_the_image_is_a_residual_not_a_bias(batch):
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, X_SHAPE)
        out = net.add_convolution(x, 7, (3, 3), _weights(7, 5, 3, 3), padding=1, name="conv").get_output(0)
        table = net.add_constant(None, _weights(batch, 7, 9, 7), name="table").get_output(0)
        net.mark_output(net.add_elementwise(out, table, E.SUM, name="add").get_output(0))
        return net

    engine, counts = _build(make, _feed(x=X_SHAPE))
    if batch == 2:  # exactly the output's shape: a residual
        assert counts == {"fused_convolution": 1, "residual": 1}
        assert engine.plan.steps[0].inputs[2] is None and engine.plan.steps[0].op.residual
    else:  # broadcast over the batch: neither
        assert counts == {} and _kinds(engine) == ["convolution", "elementwise"]


def _swish(gate_type, alpha=0.0, beta=0.0):
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, X_SHAPE)
        out = net.add_convolution(x, 7, (1, 1), _weights(7, 5, 1, 1), _weights(7), name="conv").get_output(0)
        gate = net.add_activation(out, gate_type, alpha, beta, name="gate").get_output(0)
        net.mark_output(net.add_elementwise(gate, out, E.PROD, name="mul").get_output(0))
        return net

    return make


@pytest.mark.parametrize("gate, alpha, beta, fused", [(A.SIGMOID, 0.0, 0.0, A.SILU),
                                                      (A.HARD_SIGMOID, 1 / 6, 0.5, A.HARD_SWISH)])
def test_x_times_its_gate_becomes_silu_or_hard_swish(gate, alpha, beta, fused):
    engine, counts = _build(_swish(gate, alpha, beta), _feed(x=X_SHAPE))
    assert counts == {"fused_convolution": 1, fused.value: 1}
    assert _kinds(engine) == ["fused_convolution"] and engine.plan.steps[0].op.activation is fused


def test_x_times_a_hard_sigmoid_of_other_constants_is_not_hard_swish():
    engine, counts = _build(_swish(A.HARD_SIGMOID, 0.2, 0.5), _feed(x=X_SHAPE))
    assert counts == {"fused_convolution": 1} and _kinds(engine) == ["fused_convolution", "activation", "elementwise"]


@pytest.mark.parametrize("slope_shape, fused", [((7, 1, 1), True), ((1,), True), ((9, 7), False)])
def test_prelu_fuses_with_a_per_channel_slope_only(slope_shape, fused):
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, X_SHAPE)
        out = net.add_convolution(x, 7, (3, 3), _weights(7, 5, 3, 3), padding=1, name="conv").get_output(0)
        net.mark_output(net.add_parametric_relu(out, _weights(*slope_shape), name="prelu").get_output(0))
        return net

    engine, counts = _build(make, _feed(x=X_SHAPE))
    if fused:
        assert counts == {"fused_convolution": 1, "prelu": 1} and _kinds(engine) == ["fused_convolution"]
        assert engine.plan.steps[0].op.prelu and engine.plan.steps[0].inputs[4] is not None
    else:
        assert counts == {} and _kinds(engine) == ["convolution", "parametric_relu"]


@pytest.mark.parametrize("mode, value, folded", [(tk.PaddingMode.CONSTANT, 0.0, True),
                                                 (tk.PaddingMode.CONSTANT, 0.5, False),
                                                 (tk.PaddingMode.REFLECT, 0.0, False)])
def test_a_zero_pad_folds_into_the_convolution(mode, value, folded):
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, X_SHAPE)
        padded = net.add_padding(x, (2, 1), (0, 3), mode, value, name="pad").get_output(0)
        out = net.add_convolution(padded, 7, (3, 2), _weights(7, 5, 3, 2), _weights(7), padding=(1, 0),
                                  stride=(2, 1), name="conv").get_output(0)
        net.mark_output(net.add_activation(out, A.CLIP, 0.0, 6.0, name="relu6").get_output(0))
        return net

    engine, counts = _build(make, _feed(x=X_SHAPE))
    assert counts.get("pad", 0) == int(folded)
    assert _kinds(engine) == ["fused_convolution"] if folded else ["pad", "fused_convolution"]
    if folded:
        assert engine.plan.steps[0].op.pads == (3, 1, 1, 3) and engine.plan.steps[0].fused_from[0] == "pad"


def test_deconvolution_with_bias_and_leaky_relu():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, X_SHAPE)
        out = net.add_deconvolution(x, 6, (3, 3), _weights(5, 6, 3, 3), _weights(6), stride=2, padding=1,
                                    output_padding=1, name="deconv").get_output(0)
        net.mark_output(net.add_activation(out, A.LEAKY_RELU, 0.05, name="leaky").get_output(0))
        return net

    engine, counts = _build(make, _feed(x=X_SHAPE))
    assert counts == {"fused_deconvolution": 1, "activation": 1} and _kinds(engine) == ["fused_deconvolution"]


# ---- matrix products ----------------------------------------------------------------------------------------
def test_matmul_bias_gelu_residual_becomes_one_fused_matmul():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (3, 5, 11))
        w = net.add_constant(None, _weights(13, 11), name="w").get_output(0)
        out = net.add_matrix_multiply(x, w, transpose1=True, name="mm").get_output(0)
        bias = net.add_constant((1, 1, 13), _weights(13), name="b").get_output(0)
        out = net.add_elementwise(bias, out, E.SUM, name="bias").get_output(0)
        out = net.add_activation(out, A.GELU_ERF, name="gelu").get_output(0)
        r = net.add_input("r", tk.DataType.FLOAT, (3, 5, 13))
        net.mark_output(net.add_elementwise(out, r, E.SUM, name="add").get_output(0))
        return net

    engine, counts = _build(make, _feed(x=(3, 5, 11), r=(3, 5, 13)))
    assert counts == {"fused_matmul": 1, "bias_add": 1, "activation": 1, "residual": 1}
    (step,) = engine.plan.steps
    assert step.op.transpose_b and step.op.activation is A.GELU_ERF and step.op.residual


def test_fully_connected_becomes_a_fused_matmul_after_a_flattening_reshape():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (3, 4, 2, 5))
        out = net.add_fully_connected(x, 7, _weights(7, 40), _weights(7), axis=1, name="fc").get_output(0)
        net.mark_output(net.add_activation(out, A.TANH, name="tanh").get_output(0))
        return net

    engine, counts = _build(make, _feed(x=(3, 4, 2, 5)))
    assert counts == {"fused_matmul": 1, "activation": 1}
    assert _kinds(engine) == ["shuffle", "fused_matmul"] and engine.plan.steps[1].op.transpose_b


def test_a_plain_matmul_is_left_alone():
    def make():
        net = tk.NetworkDefinition()
        a = net.add_input("a", tk.DataType.FLOAT, (4, 6))
        b = net.add_input("b", tk.DataType.FLOAT, (6, 3))
        net.mark_output(net.add_matrix_multiply(a, b, name="mm").get_output(0))
        return net

    engine, counts = _build(make, _feed(a=(4, 6), b=(6, 3)))
    assert counts == {} and _kinds(engine) == ["matrix_multiply"]


# ---- against onnxruntime, and through the engine file ---------------------------------------------------------------
def _onnx_block() -> onnx.ModelProto:
    """Pad -> Conv -> Add(bias) -> Clip(0, 6) -> Add(residual) -> Relu, then Gemm -> HardSwish."""
    inits = [numpy_helper.from_array(v, n) for n, v in [
        ("pads", np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64)), ("w", _weights(6, 3, 3, 3)),
        ("b", _weights(1, 6, 1, 1)), ("lo", np.array(0, np.float32)), ("hi", np.array(6, np.float32)),
        ("shape", np.array([2, -1], np.int64)), ("fw", _weights(6 * 7 * 5, 5, scale=0.05)), ("fb", _weights(5))]]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[3, 3], strides=[1, 1]),
             helper.make_node("Add", ["c", "b"], ["cb"]),
             helper.make_node("Clip", ["cb", "lo", "hi"], ["a"]),
             helper.make_node("Add", ["a", "r"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"]),
             helper.make_node("Reshape", ["y", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["g"]),
             helper.make_node("HardSwish", ["g"], ["z"])]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3, 7, 5)),
                                               helper.make_tensor_value_info("r", TensorProto.FLOAT, (2, 6, 7, 5))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fused_onnx_block_matches_onnxruntime_and_survives_the_engine_file(tmp_path):
    import onnxruntime as ort

    model = _onnx_block()
    feeds = _feed(x=(2, 3, 7, 5), r=(2, 6, 7, 5))
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    engine = tk.Builder().build(parse_onnx(model))
    counts = engine.plan.build_info["pass_counts"]
    assert counts["fuse_vertical.fused_convolution"] == 1 and counts["fuse_vertical.pad"] == 1
    assert counts["fuse_vertical.fused_matmul"] == 1
    # y is a network output, so the Relu after the residual add ends the convolution's chain
    assert [s.kind for s in engine.plan.steps if s.kind.startswith("fused")] == ["fused_convolution", "fused_matmul"]
    engine.save(tmp_path / "block.engine")
    loaded = tk.Runtime().load(tmp_path / "block.engine")
    assert [s.op for s in loaded.plan.steps] == [s.op for s in engine.plan.steps]
    got = loaded.create_execution_context().execute(feeds)
    for name, want in zip(("y", "z"), expected):
        _assert_close(got[name], want, name)


def test_the_in_place_epilogue_never_writes_into_an_input():
    # the CPU kernel applies ReLU and the residual add in place on the convolution's fresh result only
    feeds = _feed(x=X_SHAPE, r=(2, 7, 9, 7))
    engine = tk.Builder().build(_make(_conv_chain))
    inputs = {name: torch.from_numpy(value.copy()) for name, value in feeds.items()}
    first = engine.create_execution_context().execute(inputs)
    for name, value in feeds.items():
        np.testing.assert_array_equal(inputs[name].numpy(), value, err_msg=name)
    again = engine.create_execution_context().execute(inputs)
    np.testing.assert_array_equal(again["post_output_0"].numpy(), first["post_output_0"].numpy())


@pytest.mark.parametrize("groups, stride, dilation, pads", [(1, (1, 1), (1, 1), (1, 1, 1, 1)),
                                                            (3, (2, 1), (1, 2), (2, 0, 2, 0)),
                                                            (6, (2, 2), (1, 1), (1, 1, 1, 1)),
                                                            (1, (1, 1), (1, 1), (0, 1, 2, 1))])  # asymmetric
def test_the_cpu_fused_convolution_kernel_matches_the_plain_one(groups, stride, dilation, pads):
    # on the CPU the fused kernel runs NHWC inputs through oneDNN with weights packed once (kept on the weight
    # tensor); asymmetric pads take the plain path
    from tensorkiln.ir import ops
    from tensorkiln.kernels.cpu.conv import convolution
    from tensorkiln.kernels.cpu.fused import fused_convolution

    x, weight, bias = (torch.from_numpy(a) for a in (_feed(x=(2, 6, 11, 8))["x"], _weights(12, 6 // groups, 3, 3),
                                                       _weights(12)))
    x = x.contiguous(memory_format=torch.channels_last)  # NHWC: what engines built channels-last run on
    plain = ops.Convolution(stride, pads, dilation, groups)
    fused = ops.FusedConvolution(stride, pads, dilation, groups, A.RELU)
    with torch.inference_mode():
        want = torch.relu(convolution(plain, [x, weight, bias])[0])
        for _ in range(2):  # the second call reuses the packed weight
            (got,) = fused_convolution(fused, [x, weight, bias, None, None])
            _assert_close(got.numpy(), want.numpy())
    packed = pads[:2] == pads[2:] and torch.backends.mkldnn.is_available()
    assert hasattr(weight, "_tensorkiln_onednn_packed") == packed
    if packed:
        assert got.is_contiguous(memory_format=torch.channels_last)  # NHWC in, NHWC out
    nchw_weight = weight.clone()  # an NCHW input (the default engine layout) takes the plain path
    with torch.inference_mode():
        (got,) = fused_convolution(fused, [x.contiguous(), nchw_weight, bias, None, None])
    assert got.is_contiguous() and not hasattr(nchw_weight, "_tensorkiln_onednn_packed")
    _assert_close(got.numpy(), want.numpy())
