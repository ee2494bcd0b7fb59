"""The activation memory planner: no two live tensors share bytes, pointwise layers run in place."""
from __future__ import annotations

import numpy as np

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation
from tensorkiln.plan.memory import ALIGNMENT


def chain_engine():
    rng = np.random.default_rng(0)
    network = tk.NetworkDefinition("chain")
    x = network.add_input("x", tk.DataType.FLOAT, (1, 4, 9, 9))
    a = network.add_convolution(x, 8, (3, 3), rng.standard_normal((8, 4, 3, 3)), padding=1, name="a").get_output(0)
    b = network.add_activation(a, ActivationType.RELU, name="b").get_output(0)  # in place over a
    c = network.add_convolution(b, 8, (3, 3), rng.standard_normal((8, 8, 3, 3)), padding=1, name="c").get_output(0)
    d = network.add_elementwise(c, b, ElementWiseOperation.SUM, name="d").get_output(0)  # residual
    e = network.add_convolution(d, 2, (1, 1), rng.standard_normal((2, 8, 1, 1)), name="e").get_output(0)
    network.mark_output(e)
    return tk.Builder(tk.BuilderConfig(passes=("fold_constants",))).build(network)  # unfused: b is its own layer


def lifetimes(plan):
    first, last = {}, {}
    for index, step in enumerate(plan.steps):
        for name in step.outputs:
            first.setdefault(name, index)
            last.setdefault(name, index)
        for name in step.inputs:
            if name in first:
                last[name] = index
    return first, last


def test_live_tensors_never_share_bytes_unless_in_place():
    plan = chain_engine().plan
    offsets, specs = plan.memory.offsets, {t.name: t for t in plan.tensors}
    first, last = lifetimes(plan)
    names = sorted(offsets)
    for i, p in enumerate(names):
        assert offsets[p] % ALIGNMENT == 0
        for q in names[i + 1:]:
            overlap_bytes = offsets[p] < offsets[q] + specs[q].nbytes and offsets[q] < offsets[p] + specs[p].nbytes
            overlap_time = first[p] <= last[q] and first[q] <= last[p]
            in_place = offsets[p] == offsets[q] and (last[p] == first[q] or last[q] == first[p])
            assert not (overlap_bytes and overlap_time) or in_place, (p, q)


def test_relu_runs_in_place_and_arena_is_smaller_than_the_sum():
    engine = chain_engine()
    offsets = engine.plan.memory.offsets
    assert offsets["a_output_0"] == offsets["b_output_0"]
    assert engine.arena_nbytes < engine.activations_nbytes
    x = np.random.default_rng(1).standard_normal((1, 4, 9, 9), dtype=np.float32)
    expected = engine.create_execution_context().execute({"x": x})
    np.testing.assert_array_equal(engine.create_execution_context(use_arena=True).execute({"x": x})["e_output_0"],
                                  expected["e_output_0"])
