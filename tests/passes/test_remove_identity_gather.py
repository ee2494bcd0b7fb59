"""remove_identity_gather: a Gather whose constant indices pick every element of its axis in order becomes a reshape
(and, with its neighbouring reshapes, a view); other gathers stay. Engines with and without the pass must agree, and
the Hugging Face padding-mask chain must lose its Gather."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.passes.manager import pipeline_with


def _gather_net(indices: np.ndarray, axis: int, shape=(3, 5, 2)):
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, shape)
        picked = net.add_constant(indices.shape, indices).get_output(0)
        y = net.add_gather(x, picked, axis=axis).get_output(0)
        net.mark_output(net.add_activation(y, tk.ActivationType.RELU).get_output(0))
        return net
    return make


def _build(make):
    feed = {"x": np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)}
    engine = tk.Builder(tk.BuilderConfig()).build(make())
    reference = tk.Builder(tk.BuilderConfig(passes=pipeline_with("-remove_identity_gather"))).build(make())
    got, want = engine.create_execution_context().execute(feed), reference.create_execution_context().execute(feed)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    return engine.plan.build_info["pass_counts"].get("remove_identity_gather.gather", 0), \
        sum(step.kind == "gather" for step in engine.plan.steps)


@pytest.mark.parametrize("indices, axis", [
    (np.arange(5).reshape(5, 1), 1),  # as Hugging Face's mask helpers index a flattened mask
    (np.arange(3).reshape(1, 3, 1), 0),
    (np.array([-2, -1]), 2),  # negative indices count from the end
    (np.arange(5), -2),  # a negative axis
])
def test_gathers_of_every_index_in_order_become_reshapes(indices, axis):
    assert _build(_gather_net(indices.astype(np.int64), axis)) == (1, 0)


@pytest.mark.parametrize("indices, axis", [
    (np.array([1, 0, 2]), 0),  # a permutation
    (np.array([0, 1, 2, 3]), 1),  # a prefix only
    (np.array([0, 1, 1, 3, 4]), 1),  # a repeat
])
def test_other_gathers_stay(indices, axis):
    assert _build(_gather_net(indices.astype(np.int64), axis)) == (0, 1)
