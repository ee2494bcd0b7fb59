"""Residual adds in place (plan/in_place.py): a fused layer whose residual dies at it stores its output over it.

The CPU kernels do not write over their residual, so these tests let the planner believe the CPU convolution does
(monkeypatch) and check the plan; the arena run then proves the plan on the CPU (each output is copied into its
planned bytes: those of the dead residual). tests/gpu/test_triton_kernels.py checks the kernels that really do."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation
from tensorkiln.plan import in_place


def bottleneck(extra_reader=None, reader_first=False):
    """a = relu(conv(x)); b = relu(conv(a)); c = relu(conv(b) + a); e = conv(c). `extra_reader(network, a)` adds a
    layer that also reads a (an extra output), after c or, with `reader_first`, before it."""
    rng = np.random.default_rng(0)
    network = tk.NetworkDefinition("bottleneck")
    x = network.add_input("x", tk.DataType.FLOAT, (2, 8, 9, 9))

    def conv(t, name, relu=True):
        out = network.add_convolution(t, 8, (3, 3), rng.standard_normal((8, 8, 3, 3)) * 0.2, padding=1,
                                      name=name).get_output(0)
        return network.add_activation(out, ActivationType.RELU, name=f"{name}_relu").get_output(0) if relu else out

    a = conv(x, "a")
    b = conv(a, "b")
    if extra_reader is not None and reader_first:
        network.mark_output(extra_reader(network, a))
    c = network.add_elementwise(conv(b, "c", relu=False), a, ElementWiseOperation.SUM, name="add").get_output(0)
    c = network.add_activation(c, ActivationType.RELU, name="add_relu").get_output(0)
    network.mark_output(conv(c, "e", relu=False))
    if extra_reader is not None and not reader_first:
        network.mark_output(extra_reader(network, a))
    return network


def build(network, monkeypatch, capable=True):
    monkeypatch.setattr(in_place, "writes_over_residual", lambda tactic: capable)
    builder = tk.Builder(tk.BuilderConfig())
    return builder.build(network), builder


def marked(engine):
    return [s for s in engine.plan.steps if getattr(s.op, "residual_in_place", False)]


def test_the_residual_convolution_stores_over_the_block_input(monkeypatch):
    engine, builder = build(bottleneck(), monkeypatch)
    (step,) = marked(engine)
    residual, out = step.inputs[in_place.RESIDUAL_INPUT], step.outputs[0]
    offsets = engine.plan.memory.offsets
    assert offsets[out] == offsets[residual]
    assert any("residual adds in place: 1 layers" in line for line in builder.build_log)
    baseline, _ = build(bottleneck(), monkeypatch, capable=False)
    assert not marked(baseline) and engine.arena_nbytes < baseline.arena_nbytes
    # the flag survives the engine file, and the arena run (output copied over the dead residual) is exact
    engine = tk.Runtime().deserialize(engine.serialize())
    assert len(marked(engine)) == 1
    x = np.random.default_rng(1).standard_normal((2, 8, 9, 9), dtype=np.float32)
    expected = baseline.create_execution_context().execute({"x": x})
    got = engine.create_execution_context(use_arena=True).execute({"x": x})
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5)


def _late_conv(network, a):
    return network.add_convolution(a, 8, (1, 1), np.ones((8, 8, 1, 1)), name="late").get_output(0)


def _view(network, a):  # a reshape runs as a view: writing over a would change it
    return network.add_shuffle(a, reshape_dims=(2, 8, 81), name="view").get_output(0)


@pytest.mark.parametrize("extra_reader, reader_first", [(_late_conv, False), (_view, True)],
                         ids=["read_after_the_add", "viewed_before_the_add"])
def test_a_residual_that_lives_on_or_may_be_viewed_is_left_alone(monkeypatch, extra_reader, reader_first):
    engine, _ = build(bottleneck(extra_reader, reader_first), monkeypatch)
    assert any(getattr(s.op, "residual", False) for s in engine.plan.steps)  # the add is still fused
    assert not marked(engine)


def test_tactics_that_cannot_write_over_the_residual_are_never_marked(monkeypatch):
    assert not marked(tk.Builder(tk.BuilderConfig()).build(bottleneck()))  # the CPU kernels: none can
    engine, _ = build(bottleneck(), monkeypatch, capable=False)
    assert not marked(engine)


def test_the_timer_times_tactics_that_can_store_over_the_residual_doing_so(monkeypatch):
    # before tactics are chosen, the builder knows which layers will store over their residual if their tactic can
    # (residual_in_place_candidates); the timer then times the capable tactics that way, under a key of their own
    from tensorkiln.ir import ops
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.ir.graph import Layer, Tensor
    from tensorkiln.kernels.registry import KernelEntry
    from tensorkiln.tactics.timing import TacticTimer, TimingCache

    network = bottleneck()
    engine = tk.Builder(tk.BuilderConfig()).build(network)
    assert in_place.residual_in_place_candidates(engine.plan.steps, engine.plan.tensors,
                                                 {t.name for t in engine.plan.outputs}) == {"c.fused"}

    timed = []
    monkeypatch.setattr(TacticTimer, "_time", lambda self, layer, entry: timed.append(
        (entry.impl, layer.op.residual_in_place)) or {"capable": 1.0, "plain": 2.0}[entry.impl])
    spec = Tensor("t", DataType.FLOAT, (1, 4, 3, 3))
    layer = Layer("c", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True), [spec] * 4, [spec])
    entries = [KernelEntry("fused_convolution", "cuda", impl, lambda op, inputs: [],
                           writes_over_residual=impl == "capable") for impl in ("capable", "plain")]
    cache = TimingCache()
    timer = TacticTimer(torch.device("cpu"), torch.float16, cache)
    assert timer(layer, entries, in_place=True).impl == "capable"
    assert timed == [("capable", True), ("plain", False)]
    timer(layer, entries)  # not in place: the capable tactic is timed again, under a key of its own; plain is cached
    assert timed[2:] == [("capable", False)] and len(cache.entries) == 3
