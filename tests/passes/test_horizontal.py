"""fuse_horizontal: sibling convolutions, matrix multiplies and fully connected layers that read one input merge
into one wider layer and a split; structure (counts, kinds) and numerics (outputs unchanged)."""
from __future__ import annotations

import numpy as np

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.ir.ops import ElementWiseOperation as E

PASSES = ("fold_constants", "fuse_horizontal", "remove_dead_layers")
RTOL = 1e-5
RNG = np.random.default_rng(0)


def _weights(*shape):
    return RNG.standard_normal(shape).astype(np.float32) * 0.2


def _run(make, feeds, passes=PASSES):
    """(pass counts, step kinds, steps); the outputs agree with the network built without the pass."""
    engine = tk.Builder(tk.BuilderConfig(passes=passes, debug=True)).build(make())
    reference = tk.Builder(tk.BuilderConfig(passes=("fold_constants",))).build(make())
    got = engine.create_execution_context().execute(feeds)
    want = reference.create_execution_context().execute(feeds)
    assert set(got) == set(want)
    for name in want:
        error = np.max(np.abs(got[name] - want[name])) / max(np.max(np.abs(want[name])), 1e-12)
        assert error <= RTOL, f"{name}: relative error {error:.2e}"
    counts = {k: v for k, v in engine.plan.build_info["pass_counts"].items() if k.startswith("fuse_horizontal")}
    return counts, [s.kind for s in engine.plan.steps], engine.plan.steps


CONV_WEIGHTS = [(_weights(8, 6, 1, 1), _weights(8)), (_weights(5, 6, 1, 1), None), (_weights(3, 6, 1, 1), _weights(3))]
KERNEL_3X3 = _weights(3, 6, 3, 3)


def _conv_siblings(stride_of_last=1, kernel_of_last=1, activations=(A.RELU,) * 3, output_of_first=False):
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (2, 6, 9, 7))
    for index, (kernel, bias) in enumerate(CONV_WEIGHTS):
        last = index == len(CONV_WEIGHTS) - 1
        size = kernel_of_last if last else 1
        weights = kernel if size == 1 else KERNEL_3X3
        conv = net.add_convolution(x, kernel.shape[0], (size, size), weights, bias,
                                   stride=stride_of_last if last else 1, padding=size // 2, name=f"conv{index}")
        out = conv.get_output(0)
        if index == 0 and output_of_first:
            net.mark_output(out)
        out = net.add_activation(out, activations[index], name=f"act{index}").get_output(0)
        net.mark_output(net.add_pooling(out, tk.PoolingType.MAX, (2, 2), name=f"pool{index}").get_output(0))
    return net


def _x(*shape):
    return {"x": RNG.standard_normal(shape).astype(np.float32)}


def test_sibling_convolutions_merge_with_their_biases_and_activation():
    counts, kinds, steps = _run(_conv_siblings, _x(2, 6, 9, 7))
    assert counts == {"fuse_horizontal.convolution_groups": 1, "fuse_horizontal.convolution_layers": 3}
    assert kinds == ["convolution", "activation", "split", "pooling", "pooling", "pooling"]
    assert steps[2].op.axis == 1 and steps[2].op.sizes == (8, 5, 3)
    assert set(steps[0].fused_from) == {"conv0", "conv1", "conv2", "act0", "act1", "act2"}


def test_convolutions_that_differ_are_not_merged():
    # a strided or larger-kernel sibling stays out; the other two still merge
    for make in (lambda: _conv_siblings(stride_of_last=2), lambda: _conv_siblings(kernel_of_last=3)):
        counts, kinds, _ = _run(make, _x(2, 6, 9, 7))
        assert counts == {"fuse_horizontal.convolution_groups": 1, "fuse_horizontal.convolution_layers": 2}
        assert kinds.count("convolution") == 2


def test_siblings_merge_only_with_others_followed_by_the_same_activation():
    # the two ReLU siblings merge with their ReLU; the sigmoid one stays apart (one epilogue per wide layer)
    counts, kinds, steps = _run(lambda: _conv_siblings(activations=(A.RELU, A.RELU, A.SIGMOID)), _x(2, 6, 9, 7))
    assert counts == {"fuse_horizontal.convolution_groups": 1, "fuse_horizontal.convolution_layers": 2}
    assert kinds.count("convolution") == 2 and kinds.count("activation") == 2 and kinds.count("split") == 1
    assert {"conv0", "conv1", "act0", "act1"} == set(next(s for s in steps if s.kind == "split").fused_from)


def test_a_sibling_followed_by_an_activation_and_one_followed_by_an_add_stay_apart():
    # ResNet's first bottleneck: its 1x1 convolution (-> ReLU) and its downsample (-> residual Add) read one tensor
    second = _weights(5, 8, 1, 1)

    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (2, 6, 9, 7))
        (wa, ba), (wb, bb), _ = CONV_WEIGHTS
        a = net.add_convolution(x, 8, (1, 1), wa, ba, name="a").get_output(0)
        b = net.add_convolution(x, 5, (1, 1), wb, bb, name="b").get_output(0)
        a = net.add_activation(a, A.RELU, name="relu").get_output(0)
        a = net.add_convolution(a, 5, (1, 1), second, None, name="c").get_output(0)
        net.mark_output(net.add_elementwise(a, b, E.SUM, name="add").get_output(0))
        return net

    counts, kinds, _ = _run(make, _x(2, 6, 9, 7))
    assert counts == {} and kinds.count("convolution") == 3 and "split" not in kinds


def test_a_sibling_whose_result_is_a_network_output_stays_apart():
    counts, kinds, _ = _run(lambda: _conv_siblings(output_of_first=True), _x(2, 6, 9, 7))
    assert counts == {"fuse_horizontal.convolution_groups": 1, "fuse_horizontal.convolution_layers": 2}
    assert kinds.count("convolution") == 2


PROJECTIONS = [(_weights(12 + 4 * i, 12), _weights(12, 12 + 4 * i), _weights(12 + 4 * i)) for i in range(3)]
FC_WEIGHTS = [(_weights(6, 16), None), (_weights(2, 16), _weights(2))]


def _projections(with_bias=(True, False, True), transposed=(False, True, False)):
    """The Q, K, V projections of attention as exporters write them: MatMul by a constant, then Add a bias."""
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (2, 5, 12))
    for index, (bias, transpose) in enumerate(zip(with_bias, transposed)):
        transposed_weight, weight, bias_value = PROJECTIONS[index]
        weight = transposed_weight if transpose else weight
        w = net.add_constant(None, weight, name=f"w{index}").get_output(0)
        out = net.add_matrix_multiply(x, w, transpose1=transpose, name=f"proj{index}").get_output(0)
        if bias:
            b = net.add_constant(None, bias_value, name=f"b{index}").get_output(0)
            out = net.add_elementwise(b, out, E.SUM, name=f"bias{index}").get_output(0)
        net.mark_output(net.add_activation(out, A.TANH, name=f"use{index}").get_output(0))
    return net


def test_projections_merge_into_one_matrix_multiply_with_one_bias():
    counts, kinds, steps = _run(_projections, _x(2, 5, 12))
    assert counts == {"fuse_horizontal.matrix_multiply_groups": 1, "fuse_horizontal.matrix_multiply_layers": 3}
    assert kinds == ["matrix_multiply", "elementwise", "split", "activation", "activation", "activation"]
    assert steps[2].op.axis == 2 and steps[2].op.sizes == (12, 16, 20)


def test_projections_without_any_bias_merge_without_an_add():
    counts, kinds, _ = _run(lambda: _projections(with_bias=(False,) * 3), _x(2, 5, 12))
    assert counts["fuse_horizontal.matrix_multiply_layers"] == 3
    assert kinds[:2] == ["matrix_multiply", "split"]


def test_fully_connected_siblings_merge():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (3, 4, 2, 2))
        for index, (weight, bias) in enumerate(FC_WEIGHTS):
            fc = net.add_fully_connected(x, weight.shape[0], weight, bias, name=f"fc{index}")
            net.mark_output(net.add_activation(fc.get_output(0), A.SIGMOID).get_output(0))
        return net

    counts, kinds, _ = _run(make, _x(3, 4, 2, 2))
    assert counts == {"fuse_horizontal.fully_connected_groups": 1, "fuse_horizontal.fully_connected_layers": 2}
    # the activations' results are network outputs, so they stay after the split
    assert kinds == ["fully_connected", "split", "activation", "activation"]
