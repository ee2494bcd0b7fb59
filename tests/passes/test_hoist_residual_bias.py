"""hoist_residual_bias: a residual GEMM's bias moves into the LayerNorm that produced its residual, and the other
GEMMs reading that LayerNorm take it out through their weights. The engines built with and without the pass must
agree; where a reader cannot take the constant out, nothing moves."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.passes.manager import DEFAULT_PIPELINE, pipeline_with
from tolerances import tolerance_for

WITHOUT = pipeline_with("-hoist_residual_bias")
WIDTH = 24
TOL = tolerance_for("float32")


def _block(second_reader: str = "linear", norm_is_output: bool = False):
    """x -> LN (scale, bias) -> s;  q = s W1 + b1 (the GEMM that takes the constant out);  y = h W2 + b2 + s."""
    def make():
        rng = np.random.default_rng(3)
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (2, 5, WIDTH))

        def linear(t, name, relu=False):
            w = rng.standard_normal((WIDTH, t.shape[-1])).astype(np.float32) / np.sqrt(t.shape[-1])
            out = net.add_fully_connected(t, WIDTH, w, (rng.standard_normal(WIDTH) * 2).astype(np.float32), axis=2,
                                          name=name).get_output(0)
            return net.add_activation(out, tk.ActivationType.RELU).get_output(0) if relu else out

        s = net.add_layer_norm(x, (1 + 0.1 * rng.standard_normal(WIDTH)).astype(np.float32),
                               rng.standard_normal(WIDTH).astype(np.float32), name="norm").get_output(0)
        h = linear(s, "first", relu=True) if second_reader == "linear" else \
            net.add_activation(s, tk.ActivationType.SIGMOID).get_output(0)
        y = net.add_elementwise(linear(h, "second"), s, tk.ElementWiseOperation.SUM).get_output(0)
        net.mark_output(y)
        if norm_is_output:
            net.mark_output(s)
        return net
    return make


def _build(make):
    feed = {"x": np.random.default_rng(0).standard_normal((2, 5, WIDTH)).astype(np.float32)}
    engine = tk.Builder(tk.BuilderConfig(passes=DEFAULT_PIPELINE)).build(make())
    reference = tk.Builder(tk.BuilderConfig(passes=WITHOUT)).build(make())
    got, want = engine.create_execution_context().execute(feed), reference.create_execution_context().execute(feed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=TOL.rtol, atol=TOL.atol, err_msg=name)
    return engine, engine.plan.build_info["pass_counts"].get("hoist_residual_bias.hoisted", 0)


def test_the_residual_gemm_leaves_its_bias_to_the_layer_norm():
    engine, hoisted = _build(_block())
    assert hoisted == 1
    second = next(s for s in engine.plan.steps if s.name.startswith("second"))
    assert second.op.residual and second.inputs[2] is None


@pytest.mark.parametrize("case, make", [
    ("a sigmoid reads the normalized tensor", _block(second_reader="sigmoid")),
    ("the normalized tensor is a network output", _block(norm_is_output=True)),
])
def test_the_bias_stays_where_the_constant_cannot_be_taken_out(case, make):
    engine, hoisted = _build(make)
    assert hoisted == 0, case
    assert next(s for s in engine.plan.steps if s.name.startswith("second")).inputs[2] is not None, case
