"""eliminate_concat: folding (constants, one input), flattening nested concatenations, and the `in_place`
mark a memory planner may use; the mark is set only where placing the producers in the result is valid."""
from __future__ import annotations

import numpy as np

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.passes.manager import PassManager

RNG = np.random.default_rng(0)
# different kernel sizes, so that fuse_horizontal (in the default pipeline) leaves the two convolutions apart
KERNELS = [RNG.standard_normal((c, 3, k, k)).astype(np.float32) for c, k in ((4, 1), (6, 3))]


def _counts(network, passes=("eliminate_concat",)):
    manager = PassManager(passes, debug=True)
    manager.run(network.ir)
    return manager.counts(), manager.records[-1].log


def _concat_of_convs(batch=1, extra_reader=False, output=False, via_shuffle=False):
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (batch, 3, 5, 5))
    parts = [net.add_convolution(x, k.shape[0], k.shape[2:], k, padding=k.shape[2] // 2, name=f"conv{i}").get_output(0)
             for i, k in enumerate(KERNELS)]
    if via_shuffle:
        parts[1] = net.add_shuffle(parts[1], reshape_dims=parts[1].shape).get_output(0)
    if extra_reader:
        net.mark_output(net.add_activation(parts[0], A.RELU).get_output(0))
    concat = net.add_concatenation(parts, axis=1, name="concat").get_output(0)
    net.mark_output(concat if output else net.add_activation(concat, A.SIGMOID, name="after").get_output(0))
    return net


def _in_place(network) -> bool:
    return network.ir.layer("concat").op.in_place


def test_concatenation_of_fresh_contiguous_buffers_is_marked_in_place():
    network = _concat_of_convs()
    counts, log = _counts(network)
    assert counts == {"eliminate_concat.in_place_eligible": 1} and _in_place(network)
    assert list(log) == ["concat: producers may write into its buffer (in_place)"]


def test_in_place_mark_is_withheld_where_placement_would_be_wrong():
    cases = {
        "strided": (_concat_of_convs(batch=2), "strided"),  # batch 2: each input is 2 blocks of the result
        "second reader": (_concat_of_convs(extra_reader=True), "also read elsewhere"),
        "network output": (_concat_of_convs(output=True), "network output"),
        "view": (_concat_of_convs(via_shuffle=True), "view"),
    }
    for name, (network, reason) in cases.items():
        counts, log = _counts(network)
        assert counts == {} and not _in_place(network), name
        assert reason in log[0], (name, log)


def test_in_place_mark_survives_the_engine_file_and_changes_no_output():
    feeds = {"x": RNG.standard_normal((1, 3, 5, 5)).astype(np.float32)}
    engine = tk.Builder().build(_concat_of_convs())
    (step,) = [s for s in engine.plan.steps if s.kind == "concatenation"]
    assert step.op.in_place
    loaded = tk.Runtime().deserialize(engine.serialize())
    (step,) = [s for s in loaded.plan.steps if s.kind == "concatenation"]
    assert step.op.in_place
    reference = tk.Builder(tk.BuilderConfig(passes=("fold_constants",))).build(_concat_of_convs())
    want = reference.create_execution_context().execute(feeds)
    got = loaded.create_execution_context().execute(feeds)
    np.testing.assert_array_equal(got["after_output_0"], want["after_output_0"])


def test_concatenations_of_constants_and_of_one_input_are_removed():
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (2, 3))
    a = net.add_constant(None, np.ones((2, 1), np.float32)).get_output(0)
    b = net.add_constant(None, np.zeros((2, 2), np.float32)).get_output(0)
    constants = net.add_concatenation([a, b], axis=1, name="constants").get_output(0)
    single = net.add_concatenation([x], axis=0, name="single").get_output(0)
    net.mark_output(net.add_elementwise(single, constants, tk.ElementWiseOperation.SUM, name="sum").get_output(0))
    net.mark_output(net.add_concatenation([x], axis=1, name="single_output").get_output(0))
    counts, _ = _counts(net)
    assert counts == {"eliminate_concat.folded": 1, "eliminate_concat.single_input": 2}
    assert [l.kind for l in net.ir.layers if l.kind != "constant"] == ["elementwise", "identity"]
    assert net.ir.layer("sum").inputs[0] is x
    np.testing.assert_array_equal(net.ir.layer("sum").inputs[1].value, np.array([[1, 0, 0]] * 2, np.float32))
    engine = tk.Builder().build(net)
    value = RNG.standard_normal((2, 3)).astype(np.float32)
    outputs = engine.create_execution_context().execute({"x": value})
    np.testing.assert_array_equal(outputs["single_output_output_0"], value)
    np.testing.assert_array_equal(outputs["sum_output_0"], value + np.array([[1, 0, 0]], np.float32))


def test_nested_concatenations_on_one_axis_are_flattened():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (1, 2, 3))
        parts = [net.add_activation(x, kind).get_output(0) for kind in (A.RELU, A.TANH, A.SIGMOID)]
        inner = net.add_concatenation(parts[1:], axis=1, name="inner").get_output(0)
        outer = net.add_concatenation([parts[0], inner], axis=-2, name="concat").get_output(0)
        net.mark_output(net.add_activation(outer, A.ELU, 1.0).get_output(0))
        return net

    network = make()
    counts, _ = _counts(network)
    assert counts == {"eliminate_concat.flattened": 1, "eliminate_concat.in_place_eligible": 1}
    assert [l.name for l in network.ir.layers if l.kind == "concatenation"] == ["concat"]
    assert len(network.ir.layer("concat").inputs) == 3
    value = RNG.standard_normal((1, 2, 3)).astype(np.float32)
    got = tk.Builder().build(make()).create_execution_context().execute({"x": value})
    want = tk.Builder(tk.BuilderConfig(passes=())).build(make()).create_execution_context().execute({"x": value})
    np.testing.assert_allclose(got[next(iter(want))], next(iter(want.values())), rtol=1e-6)
