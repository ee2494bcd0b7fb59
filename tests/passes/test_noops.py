"""remove_noops: identity, Dropout, same-type Cast, shuffles that change nothing or cancel out, x + 0, x - 0, x * 1,
x / 1 are removed; structure (counts, kinds, output names) and numerics (onnxruntime, or the network built without
the pass)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.ir.ops import ElementWiseOperation as E
from tensorkiln.passes.manager import DEFAULT_PIPELINE

PASSES = ("fold_constants", "remove_noops", "remove_dead_layers")
RNG = np.random.default_rng(3)


def _random(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _counts(engine):
    return {k: v for k, v in engine.plan.build_info["pass_counts"].items() if k.startswith("remove_noops")}


def _check_onnx(nodes, x_shape, outputs=("y",), weights=None, passes=PASSES):
    """Build an ONNX graph with `passes`, compare with onnxruntime; return (counts, step kinds, engine)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                              [numpy_helper.from_array(v, k) for k, v in (weights or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feed = {"x": _random(*x_shape)}
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    engine = tk.Builder(tk.BuilderConfig(passes=passes, debug=True)).build(parse_onnx(model))
    produced = engine.create_execution_context().execute(feed)
    assert list(produced) == list(outputs)
    for name, reference in zip(outputs, expected):
        assert produced[name].shape == reference.shape
        np.testing.assert_allclose(produced[name], reference, rtol=1e-6, atol=1e-6)
    return _counts(engine), [s.kind for s in engine.plan.steps], engine


def test_onnx_noops_between_two_relus_all_go():
    ones = np.ones((1, 11), np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Identity", ["a"], ["b"]),
             helper.make_node("Dropout", ["b"], ["c"], name="dropout1"),
             helper.make_node("Cast", ["c"], ["d"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["d", "same_shape"], ["e"]),
             helper.make_node("Transpose", ["e"], ["f"], perm=[0, 2, 1]),
             helper.make_node("Transpose", ["f"], ["g"], perm=[0, 2, 1]),
             helper.make_node("Add", ["zeros", "g"], ["h"]),
             helper.make_node("Sub", ["h", "zeros"], ["i"]),
             helper.make_node("Mul", ["i", "ones"], ["j"]),
             helper.make_node("Div", ["j", "ones"], ["k"]),
             helper.make_node("Relu", ["k"], ["y"])]
    weights = {"same_shape": np.array([2, 7, 11], np.int64), "zeros": np.zeros((7, 1), np.float32), "ones": ones}
    counts, kinds, engine = _check_onnx(nodes, [2, 7, 11], weights=weights)
    assert counts == {"remove_noops.identity": 2, "remove_noops.cast": 1, "remove_noops.shuffle": 1,
                      "remove_noops.shuffle_chain": 1, "remove_noops.add_zero": 1, "remove_noops.sub_zero": 1,
                      "remove_noops.mul_one": 1, "remove_noops.div_one": 1}
    assert kinds == ["activation", "activation"]


def test_build_log_names_the_removed_layers():
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (3, 5))
    relu = net.add_activation(x, A.RELU).get_output(0)
    dropped = net.add_identity(relu, name="dropout1").get_output(0)
    net.mark_output(net.add_activation(dropped, A.SIGMOID).get_output(0))
    builder = tk.Builder(tk.BuilderConfig(passes=PASSES))
    records = []
    builder._log_pass = records.append  # the per-pass records the verbose build log prints
    builder.build(net)
    assert "removed dropout1 (identity)" in next(r for r in records if r.name == "remove_noops").log


def test_noop_that_produces_a_network_output_keeps_the_output_name():
    # the producer (relu) writes the output under the identity's output name
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"]),
             helper.make_node("Sigmoid", ["a"], ["z"])]
    counts, kinds, _ = _check_onnx(nodes, [3, 13], outputs=("y", "z"))
    assert counts == {"remove_noops.identity": 1} and kinds == ["activation", "activation"]


def test_noop_between_a_network_input_and_output_stays():
    counts, kinds, _ = _check_onnx([helper.make_node("Identity", ["x"], ["y"])], [3, 13])
    assert counts == {} and kinds == ["identity"]


def test_noop_whose_input_is_also_a_network_output_stays():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])]
    counts, kinds, _ = _check_onnx(nodes, [3, 13], outputs=("y", "a"))
    assert counts == {} and kinds == ["activation", "identity"]


def test_transpose_pair_with_a_second_reader_in_between_stays():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0, 2]),
             helper.make_node("Transpose", ["t"], ["b"], perm=[1, 0, 2]),
             helper.make_node("Relu", ["b"], ["y"]), helper.make_node("Sigmoid", ["t"], ["z"])]
    counts, kinds, _ = _check_onnx(nodes, [2, 3, 5], outputs=("y", "z"))
    assert counts == {} and kinds.count("shuffle") == 2


def test_transposes_that_do_not_cancel_stay():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 2, 0]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[1, 2, 0])]
    counts, kinds, _ = _check_onnx(nodes, [2, 3, 5])
    assert counts == {} and kinds == ["shuffle", "shuffle"]


def test_transpose_with_identity_permutation_and_size_one_dims_goes():
    # perm (1, 0, 2) over a size-1 dim moves no element
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Transpose", ["a"], ["t"], perm=[0, 1, 2]),
             helper.make_node("Transpose", ["t"], ["u"], perm=[1, 0, 2]),
             helper.make_node("Reshape", ["u", "s"], ["v"]),
             helper.make_node("Relu", ["v"], ["y"])]
    counts, kinds, _ = _check_onnx(nodes, [1, 7, 5], weights={"s": np.array([7, 5], np.int64)})
    # the first is the identity; the transpose + reshape of a [7, 1, 5] tensor to [7, 5] moves nothing either,
    # but changes the shape: it stays, as one shuffle
    assert counts == {"remove_noops.shuffle": 1} and kinds == ["activation", "shuffle", "shuffle", "activation"]


@pytest.mark.parametrize("operation, constant, swap", [
    (E.SUM, np.zeros((4, 1, 1), np.float32), False),  # x [5, 1] + 0 broadcasts to [4, 5, 1]
    (E.PROD, np.ones((2, 5, 3), np.float32), True),  # 1 * x broadcasts to [2, 5, 3]
    (E.SUB, np.zeros((1,), np.float32), True),  # 0 - x is -x
    (E.DIV, np.ones((1,), np.float32), True),  # 1 / x
    (E.PROD, np.full((1,), 1.0001, np.float32), False),  # not 1
    (E.SUM, np.array([0.0, 1e-30, 0.0, 0.0, 0.0], np.float32).reshape(5, 1), False),  # not all zeros
])
def test_elementwise_that_is_not_a_noop_stays(operation, constant, swap):
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (5, 1))
        relu = net.add_activation(x, A.RELU).get_output(0)
        c = net.add_constant(None, constant).get_output(0)
        net.mark_output(net.add_elementwise(*([c, relu] if swap else [relu, c]), operation, name="op").get_output(0))
        return net
    engine = tk.Builder(tk.BuilderConfig(passes=PASSES, debug=True)).build(make())
    assert _counts(engine) == {}
    assert [s.kind for s in engine.plan.steps] == ["activation", "elementwise"]
    x = {"x": _random(5, 1)}
    reference = tk.Builder(tk.BuilderConfig(passes=("fold_constants",))).build(make())
    want = reference.create_execution_context().execute(x)["op_output_0"]
    np.testing.assert_array_equal(engine.create_execution_context().execute(x)["op_output_0"], want)


def test_mul_by_ones_that_broadcasts_to_a_bigger_shape_stays():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "ones"], ["y"])]
    counts, kinds, _ = _check_onnx(nodes, [3, 1], weights={"ones": np.ones((2, 3, 4), np.float32)})
    assert counts == {} and kinds == ["activation", "elementwise"]


def test_cast_to_another_type_stays():
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)]
    counts, kinds, _ = _check_onnx(nodes, [3, 13])
    assert counts == {} and kinds == ["cast", "cast"]


def test_default_pipeline_with_noops_matches_onnxruntime():
    nodes = [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Mul", ["b", "one"], ["c"]), helper.make_node("Unsqueeze", ["c", "axes"], ["d"]),
             helper.make_node("Squeeze", ["d", "axes"], ["e"]), helper.make_node("Sigmoid", ["e"], ["y"])]
    weights = {"one": np.ones((), np.float32), "axes": np.array([1], np.int64)}
    counts, kinds, _ = _check_onnx(nodes, [7, 13, 11], weights=weights, passes=DEFAULT_PIPELINE)
    assert counts == {"remove_noops.identity": 1, "remove_noops.mul_one": 1, "remove_noops.shuffle_chain": 1}
    assert "shuffle" not in kinds and "identity" not in kinds
