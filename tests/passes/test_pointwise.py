"""fuse_pointwise: trees of elementwise, unary and activation layers become one fused_pointwise layer running a
small SSA program. Structure (counts, programs, where groups must stop) and numerics (against numpy written here
and against the unfused network); the program parser rejects malformed programs with a clear message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.ir import ops
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.ir.ops import ElementWiseOperation as E
from tensorkiln.ir.ops import UnaryOperation as U
from tensorkiln.kernels.cpu.fused import fused_pointwise, parse_program
from tolerances import tolerance_for

PASSES = ("fold_constants", "fuse_pointwise", "remove_dead_layers")
RNG = np.random.default_rng(0)
TOL = tolerance_for("float32")
SCALE = (RNG.standard_normal((1, 5, 1)) + 2).astype(np.float32)


def _feed(**shapes):
    return {name: RNG.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def _build(make, feeds, passes=PASSES):
    """(engine, fuse_pointwise counts, outputs); the outputs agree with the unfused network's."""
    engine = tk.Builder(tk.BuilderConfig(passes=passes, debug=True)).build(make())
    reference = tk.Builder(tk.BuilderConfig(passes=("fold_constants",))).build(make())
    got = engine.create_execution_context().execute(feeds)
    want = reference.create_execution_context().execute(feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=TOL.rtol, atol=TOL.atol, err_msg=name)
    prefix = "fuse_pointwise."
    counts = {k[len(prefix):]: v for k, v in engine.plan.build_info["pass_counts"].items() if k.startswith(prefix)}
    return engine, counts, got


def _chain(mark_middle=False, second_reader=False):
    """relu(sigmoid(x * scale + y) - 0.5) with y broadcast, x [3, 5, 7]."""
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (3, 5, 7))
    y = net.add_input("y", tk.DataType.FLOAT, (7,))
    scale = net.add_constant(None, SCALE, name="scale").get_output(0)
    half = net.add_constant((), np.array(0.5, np.float32), name="half").get_output(0)
    t = net.add_elementwise(x, scale, E.PROD, name="mul").get_output(0)
    t = net.add_elementwise(t, y, E.SUM, name="add").get_output(0)
    if mark_middle:
        net.mark_output(t)
    if second_reader:
        net.mark_output(net.add_unary(t, U.EXP, name="exp").get_output(0))
    t = net.add_activation(t, A.SIGMOID, name="sigmoid").get_output(0)
    t = net.add_elementwise(t, half, E.SUB, name="sub").get_output(0)
    net.mark_output(net.add_activation(t, A.LEAKY_RELU, 0.1, name="leaky").get_output(0))
    return net


def test_a_chain_becomes_one_layer_and_matches_numpy():
    feeds = _feed(x=(3, 5, 7), y=(7,))
    engine, counts, got = _build(_chain, feeds)
    assert counts == {"fused_pointwise": 1, "layers": 5}
    (step,) = engine.plan.steps
    assert step.kind == "fused_pointwise" and step.fused_from == ("mul", "add", "sigmoid", "sub", "leaky")
    assert step.op.program == ("t0 = prod in0 in1", "t1 = sum t0 in2", "t2 = sigmoid t1 0.0 0.0",
                               "t3 = sub t2 in3", "t4 = leaky_relu t3 0.1 0.0", "out = t4")
    z = 1 / (1 + np.exp(-(feeds["x"] * SCALE + feeds["y"]))) - 0.5
    np.testing.assert_allclose(got["leaky_output_0"], np.where(z > 0, z, 0.1 * z), rtol=TOL.rtol, atol=TOL.atol)


def test_a_tensor_read_outside_the_chain_ends_a_group():
    for make in (lambda: _chain(mark_middle=True), lambda: _chain(second_reader=True)):
        engine, counts, _ = _build(make, _feed(x=(3, 5, 7), y=(7,)))
        # mul + add before the shared tensor, sigmoid + sub + leaky after it
        assert counts == {"fused_pointwise": 2, "layers": 5}
        assert [s.kind for s in engine.plan.steps].count("fused_pointwise") == 2


def test_a_tree_with_two_branches_is_one_layer():
    def make():
        net = tk.NetworkDefinition()
        a, b, c, d = (net.add_input(n, tk.DataType.FLOAT, (4, 6)) for n in "abcd")
        left = net.add_elementwise(a, b, E.PROD, name="ab").get_output(0)
        right = net.add_unary(net.add_elementwise(c, d, E.DIV, name="cd").get_output(0), U.ABS, name="abs")
        net.mark_output(net.add_elementwise(left, right.get_output(0), E.MAX, name="max").get_output(0))
        return net

    feeds = {**_feed(a=(4, 6), b=(4, 6), c=(4, 6)), "d": RNG.uniform(0.5, 2, (4, 6)).astype(np.float32)}
    engine, counts, got = _build(make, feeds)
    assert counts == {"fused_pointwise": 1, "layers": 4} and len(engine.plan.steps[0].inputs) == 4
    expected = np.maximum(feeds["a"] * feeds["b"], np.abs(feeds["c"] / feeds["d"]))
    np.testing.assert_allclose(got["max_output_0"], expected, rtol=TOL.rtol, atol=TOL.atol)


def test_a_result_that_a_later_layer_broadcasts_to_a_larger_shape_stays_apart():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (4, 1))
        y = net.add_input("y", tk.DataType.FLOAT, (1, 5))
        small = net.add_unary(net.add_unary(x, U.NEG, name="neg").get_output(0), U.EXP, name="exp").get_output(0)
        wide = net.add_elementwise(small, y, E.SUM, name="outer").get_output(0)
        net.mark_output(net.add_activation(wide, A.TANH, name="tanh").get_output(0))
        return net

    engine, counts, _ = _build(make, _feed(x=(4, 1), y=(1, 5)))
    assert counts == {"fused_pointwise": 2, "layers": 4}
    assert [s.fused_from for s in engine.plan.steps] == [("neg", "exp"), ("outer", "tanh")]


def test_integer_arithmetic_is_not_fused():
    def make():
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.INT32, (6,))
        two = net.add_constant(None, np.array([2], np.int32), name="two").get_output(0)
        t = net.add_elementwise(x, two, E.PROD, name="mul").get_output(0)
        net.mark_output(net.add_elementwise(t, two, E.SUM, name="add").get_output(0))
        return net

    engine, counts, _ = _build(make, {"x": np.arange(6, dtype=np.int32)})
    assert counts == {} and [s.kind for s in engine.plan.steps] == ["elementwise", "elementwise"]


def test_the_default_pipeline_fuses_what_vertical_fusion_leaves():
    engine = tk.Builder().build(_chain())
    assert [s.kind for s in engine.plan.steps] == ["fused_pointwise"]


# ---- the program kernel --------------------------------------------------------------------------------------------
def test_program_kernel_against_numpy_with_broadcasting():
    program = ("t0 = pow in0 in1", "t1 = sqrt t0", "t2 = clip t1 0.25 1.5", "t3 = min t2 in2", "out = t3")
    a = RNG.uniform(0.1, 2, (2, 3, 4)).astype(np.float32)
    b = np.float32([[2.0], [1.0], [3.0]])
    c = RNG.uniform(0, 2, (4,)).astype(np.float32)
    (got,) = fused_pointwise(ops.FusedPointwise(program), [torch.from_numpy(x) for x in (a, b, c)])
    expected = np.minimum(np.clip(np.sqrt(a ** b), 0.25, 1.5), c)
    np.testing.assert_allclose(got.numpy(), expected, rtol=TOL.rtol, atol=TOL.atol)


@pytest.mark.parametrize("program, message", [
    (("t0 = frobnicate in0", "out = t0"), "unknown opcode 'frobnicate'"),
    (("t0 = sum in0", "out = t0"), "wrong operand count"),
    (("t0 = relu in0",), "must end with 'out = NAME'"),
    (("t0 relu in0", "out = t0"), "not of the form"),
    (("t0 = relu in0", "out = t9"), "never defines"),
    ((), "empty"),
])
def test_malformed_programs_are_rejected(program, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_program(program)


def test_reading_a_name_before_it_is_defined_is_an_error():
    with pytest.raises(ValueError, match="reads 't1' before it is defined"):
        fused_pointwise(ops.FusedPointwise(("t0 = relu t1", "t1 = relu in0", "out = t0")), [torch.ones(2)])
