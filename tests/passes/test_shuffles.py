"""merge_shuffles: consecutive Reshape/Transpose/Flatten/Squeeze/Unsqueeze (all shuffle layers) become one shuffle,
or none where they cancel; the shuffle algebra against numpy on random chains, and the pass's structure (counts,
kinds, output names) and numerics against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.ir import ops
from tensorkiln.passes.merge_shuffles import IDENTITY, compose_shuffles
from tensorkiln.passes.manager import DEFAULT_PIPELINE

PASSES = ("fold_constants", "merge_shuffles", "remove_dead_layers")


def _apply(x: np.ndarray, op: ops.Shuffle) -> np.ndarray:
    if op.first_transpose is not None:
        x = x.transpose(op.first_transpose)
    if op.reshape_dims is not None:
        x = x.reshape(op.reshape_dims)
    if op.second_transpose is not None:
        x = x.transpose(op.second_transpose)
    return x


def _shape_from(rng, total: int, rank: int) -> tuple[int, ...]:
    """A random shape of `rank` dims with `total` elements (the prime factors dealt out at random)."""
    dims, n, p = [1] * rank, total, 2
    while n > 1:
        while n % p == 0:
            dims[rng.integers(rank)] *= p
            n //= p
        p += 1
    return tuple(dims)


def _random_chain(rng, shape):
    steps, current, total = [], shape, int(np.prod(shape))
    for _ in range(rng.integers(1, 4)):
        first = tuple(int(p) for p in rng.permutation(len(current))) if rng.random() < 0.5 else None
        moved = current if first is None else tuple(current[p] for p in first)
        reshape = _shape_from(rng, total, int(rng.integers(1, 5))) if rng.random() < 0.5 else None
        middle = moved if reshape is None else reshape
        second = tuple(int(p) for p in rng.permutation(len(middle))) if rng.random() < 0.5 else None
        steps.append(ops.Shuffle(first, reshape, second))
        current = middle if second is None else tuple(middle[p] for p in second)
    return steps


def test_composed_shuffle_moves_every_element_as_the_chain_does():
    rng = np.random.default_rng(0)
    merged = identities = 0
    for _ in range(3000):
        total = int(rng.choice([1, 6, 7, 12, 24, 30, 36, 60]))
        shape = _shape_from(rng, total, int(rng.integers(1, 5)))
        steps = _random_chain(rng, shape)
        x = np.arange(total).reshape(shape)
        expected = x
        for op in steps:
            expected = _apply(expected, op)
        composed = compose_shuffles(shape, steps)
        if composed is None:
            continue
        actual = _apply(x, composed)
        assert actual.shape == expected.shape and np.array_equal(actual, expected), (shape, steps, composed)
        identities += composed == IDENTITY
        merged += composed != IDENTITY
    assert merged > 2000 and identities > 300  # most random chains are one shuffle


# chains exporters write, and the one shuffle each must become
KNOWN = [
    # head split: reshape [B, S, H*D] -> [B, S, H, D], transpose (0, 2, 1, 3)
    ((2, 5, 12), [ops.Shuffle(reshape_dims=(2, 5, 3, 4)), ops.Shuffle(first_transpose=(0, 2, 1, 3))],
     ops.Shuffle(reshape_dims=(2, 5, 3, 4), second_transpose=(0, 2, 1, 3))),
    # head merge: transpose (0, 2, 1, 3), reshape [B, S, H*D]
    ((2, 3, 5, 4), [ops.Shuffle(first_transpose=(0, 2, 1, 3)), ops.Shuffle(reshape_dims=(2, 5, 12))],
     ops.Shuffle(first_transpose=(0, 2, 1, 3), reshape_dims=(2, 5, 12))),
    # unsqueeze, then squeeze of the same axis
    ((7, 13), [ops.Shuffle(reshape_dims=(7, 1, 13)), ops.Shuffle(reshape_dims=(7, 13))], IDENTITY),
    # two transposes that cancel
    ((2, 3, 5), [ops.Shuffle(first_transpose=(2, 0, 1)), ops.Shuffle(first_transpose=(1, 2, 0))], IDENTITY),
    # flatten after a transpose whose size-1 dim moves no element: a reshape
    ((1, 7, 5), [ops.Shuffle(first_transpose=(1, 0, 2)), ops.Shuffle(reshape_dims=(35,))],
     ops.Shuffle(reshape_dims=(35,))),
    # a reshape that regroups across dims, then a transpose: one reshape and one transpose
    ((4, 3), [ops.Shuffle(reshape_dims=(3, 4)), ops.Shuffle(first_transpose=(1, 0))],
     ops.Shuffle(reshape_dims=(3, 4), second_transpose=(1, 0))),
]


@pytest.mark.parametrize("shape, steps, expected", KNOWN)
def test_exporter_chains_compose_to_the_expected_shuffle(shape, steps, expected):
    assert compose_shuffles(shape, steps) == expected


def test_chains_no_single_shuffle_can_do_are_left_alone():
    # [6] -> [2, 3] -> transpose -> [6] interleaves elements: no transpose -> reshape -> transpose of a 1-D tensor
    steps = [ops.Shuffle(reshape_dims=(2, 3), second_transpose=(1, 0)), ops.Shuffle(reshape_dims=(6,))]
    assert compose_shuffles((6,), steps) is None


# ---- the pass on ONNX graphs --------------------------------------------------------------------------------
def _check_onnx(nodes, x_shape, outputs=("y",), weights=None, passes=PASSES):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                              [numpy_helper.from_array(v, k) for k, v in (weights or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feed = {"x": np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)}
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    engine = tk.Builder(tk.BuilderConfig(passes=passes, debug=True)).build(parse_onnx(model))
    produced = engine.create_execution_context().execute(feed)
    assert list(produced) == list(outputs)
    for name, reference in zip(outputs, expected):
        np.testing.assert_allclose(produced[name], reference, rtol=1e-6, atol=1e-7)
    counts = {k: v for k, v in engine.plan.build_info["pass_counts"].items() if k.startswith("merge_shuffles")}
    return counts, [s.kind for s in engine.plan.steps], engine


def _int64(*values):
    return np.array(values, np.int64)


def _shuffle_chain(second_reader=False, middle_is_output=False):
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Reshape", ["a", "split_heads"], ["r"], name="reshape1"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1], name="transpose1"),
             helper.make_node("Flatten", ["t"], ["f"], axis=2, name="flatten1"),
             helper.make_node("Unsqueeze", ["f", "axes"], ["u"], name="unsqueeze1"),
             helper.make_node("Relu", ["u"], ["y"])]
    outputs = ["y"]
    if second_reader:
        nodes.append(helper.make_node("Sigmoid", ["t"], ["z"]))
        outputs.append("z")
    if middle_is_output:
        outputs.append("t")
    return nodes, tuple(outputs), {"split_heads": _int64(2, 7, 3, 5), "axes": _int64(0)}


def test_reshape_transpose_flatten_unsqueeze_become_one_shuffle():
    nodes, outputs, weights = _shuffle_chain()
    counts, kinds, engine = _check_onnx(nodes, [2, 7, 15], outputs, weights)
    assert counts == {"merge_shuffles.merged": 3}
    assert kinds == ["activation", "shuffle", "activation"]
    assert engine.plan.steps[1].fused_from == ("reshape1", "transpose1", "flatten1", "unsqueeze1")


def test_shuffle_with_a_second_reader_is_not_merged_into_the_next():
    nodes, outputs, weights = _shuffle_chain(second_reader=True)
    counts, kinds, _ = _check_onnx(nodes, [2, 7, 15], outputs, weights)
    # reshape1 + transpose1 merge; t is read twice, so flatten1 + unsqueeze1 merge on their own
    assert counts == {"merge_shuffles.merged": 2}
    assert kinds.count("shuffle") == 2


def test_shuffle_whose_output_is_a_network_output_is_not_merged_into_the_next():
    nodes, outputs, weights = _shuffle_chain(middle_is_output=True)
    counts, kinds, _ = _check_onnx(nodes, [2, 7, 15], outputs, weights)
    assert counts == {"merge_shuffles.merged": 2} and kinds.count("shuffle") == 2


def test_shuffles_that_cancel_are_removed_and_the_output_keeps_its_name():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t"], perm=[2, 0, 1]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[1, 2, 0])]
    counts, kinds, _ = _check_onnx(nodes, [2, 3, 5])
    assert counts == {"merge_shuffles.identity": 1} and kinds == ["activation"]


def test_shuffles_that_cancel_between_network_input_and_output_become_one_identity():
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]), helper.make_node("Squeeze", ["u", "axes"], ["y"])]
    counts, kinds, _ = _check_onnx(nodes, [7, 13], weights={"axes": _int64(1)})
    assert counts == {"merge_shuffles.merged": 1} and kinds == ["identity"]


def test_interleaving_chain_stays_as_two_shuffles():
    nodes = [helper.make_node("Reshape", ["x", "s23"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
             helper.make_node("Reshape", ["t", "s6"], ["y"])]
    counts, kinds, _ = _check_onnx(nodes, [6], weights={"s23": _int64(2, 3), "s6": _int64(6)})
    # the reshape and the transpose merge; the last reshape interleaves, so it stays
    assert counts == {"merge_shuffles.merged": 1} and kinds == ["shuffle", "shuffle"]


def test_default_pipeline_merges_an_attention_style_head_split():
    nodes, outputs, weights = _shuffle_chain()
    counts, kinds, _ = _check_onnx(nodes, [2, 7, 15], outputs, weights, passes=DEFAULT_PIPELINE)
    assert counts == {"merge_shuffles.merged": 3} and kinds.count("shuffle") == 1
