"""Channels-last (NHWC) CPU engines: the layout is internal. Data movement on NHWC activations, the arena, and the
outputs the caller gets all behave as in an NCHW engine."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.runtime.arena import Arena
from tensorkiln.runtime.engine import Engine

from tolerances import tolerance_for

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
W2 = RNG.standard_normal((4, 5, 1, 1)).astype(np.float32)


def _network():
    """conv -> split on channels (slices) -> conv on one part -> concat on channels -> flatten; the conv and the
    concat are outputs too (4-D, so NHWC inside the engine)."""
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (2, 3, 6, 5))
    y = net.add_activation(net.add_convolution(x, 8, (3, 3), W1, padding=1, name="conv1").get_output(0), A.RELU)
    y = y.get_output(0)
    head = net.add_slice(y, (0, 0, 0, 0), (2, 3, 6, 5), (1, 1, 1, 1), name="head").get_output(0)
    tail = net.add_slice(y, (0, 3, 0, 0), (2, 5, 6, 5), (1, 1, 1, 1), name="tail").get_output(0)
    tail = net.add_convolution(tail, 4, (1, 1), W2, name="conv2").get_output(0)
    cat = net.add_concatenation([tail, head], axis=1, name="cat").get_output(0)
    flat = net.add_shuffle(cat, reshape_dims=(2, -1), name="flatten").get_output(0)
    net.mark_output(y)
    net.mark_output(cat)
    net.mark_output(flat)
    return net


@pytest.fixture(scope="module")
def engines():
    engine = tk.Builder().build(_network())
    nchw = Engine(dataclasses.replace(engine.plan, build_info={**engine.plan.build_info, "channels_last": False}),
                  engine.weights)
    return engine, nchw


def test_cpu_engines_with_convolutions_are_built_channels_last(engines):
    engine, _ = engines
    assert engine.plan.target == "cpu" and engine.plan.build_info["channels_last"]


@pytest.mark.parametrize("use_arena", [False, True], ids=["no arena", "arena"])
def test_outputs_match_nchw_and_come_back_row_major(engines, use_arena):
    engine, nchw = engines
    x = RNG.standard_normal((2, 3, 6, 5)).astype(np.float32)
    want = nchw.create_execution_context().execute({"x": x})
    tol = tolerance_for("float32")  # NCHW runs torch's convolution, NHWC oneDNN's: another summation order
    context = engine.create_execution_context(use_arena=use_arena)
    got = context.execute({"x": x})
    got_torch = context.execute({"x": torch.from_numpy(x)})
    for name in want:
        assert got[name].flags.c_contiguous and got_torch[name].is_contiguous(), name
        np.testing.assert_allclose(got[name], want[name], rtol=tol.rtol, atol=tol.atol)
        np.testing.assert_array_equal(got_torch[name].numpy(), got[name])
    np.testing.assert_array_equal(got["flatten_output_0"], got["cat_output_0"].reshape(2, -1))


def test_arena_runs_what_plain_runs_run(engines):
    engine, _ = engines
    x = RNG.standard_normal((2, 3, 6, 5)).astype(np.float32)
    plain = engine.create_execution_context().execute({"x": x})
    in_arena = engine.create_execution_context(use_arena=True).execute({"x": x})
    for name in plain:
        np.testing.assert_array_equal(in_arena[name], plain[name])


def test_arena_keeps_the_memory_format_of_what_it_places(engines):
    # a row-major copy of an NHWC activation would send the next convolution down the NCHW path (other kernels,
    # other rounding): arena runs would then not test what plain runs do
    engine, _ = engines
    arena = Arena(engine.plan)
    shapes = {t.name: t.shape for t in engine.plan.tensors}
    name = next(n for n in engine.plan.memory.offsets if len(shapes[n]) == 4)
    value = torch.randn(shapes[name]).contiguous(memory_format=torch.channels_last)
    placed = arena.place(name, value)
    assert placed.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(placed, value)
    assert placed.untyped_storage().data_ptr() == arena._pointer  # in the arena, not a fresh allocation
    row_major = arena.place(name, value.contiguous())
    assert row_major.is_contiguous() and torch.equal(row_major, value)


def test_bitcast_of_an_nhwc_tensor_to_a_narrower_dtype():
    from tensorkiln.ir import ops
    from tensorkiln.kernels.cpu.sequence_ops import bitcast

    x = torch.randn(1, 3, 4, 5)
    (got,) = bitcast(ops.BitCast(tk.DataType.INT16), [x.contiguous(memory_format=torch.channels_last)])
    assert torch.equal(got, x.view(torch.int16))
