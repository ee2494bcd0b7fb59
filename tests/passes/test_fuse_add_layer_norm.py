"""fuse_add_layer_norm: a sum (a tree of Adds: the data, at most one other tensor, constants) read only by a LayerNorm
over the last dim becomes one fused_add_layer_norm layer; the forms it must leave alone stay. Engines with and without
the pass must agree (Hugging Face's embeddings: tests/passes/test_fuse_matmul_layer_norm.py)."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.passes.manager import pipeline_with
from tolerances import tolerance_for

TOL = tolerance_for("float32")
SHAPE = (2, 7, 24)
SUM = tk.ElementWiseOperation.SUM


def _net(form: str):
    def make():
        rng = np.random.default_rng(4)
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, SHAPE)
        other = net.add_input("other", tk.DataType.FLOAT, SHAPE)

        def constant(shape):
            return net.add_constant(shape, rng.standard_normal(shape).astype(np.float32)).get_output(0)

        add = lambda a, b: net.add_elementwise(a, b, SUM).get_output(0)  # noqa: E731
        if form == "constant":  # DistilBERT's word + position embeddings
            s = add(x, constant((1, 7, 24)))
        elif form == "two_constants":  # BERT's word + token type + position embeddings
            s = add(add(x, constant((1, 7, 24))), constant((7, 24)))
        elif form in ("data", "norm_two_dims"):
            s = add(other, x)
        elif form == "three_addends":
            s = add(add(x, other), constant((24,)))
        elif form == "sum_read_elsewhere":
            s = add(x, constant((24,)))
            net.mark_output(net.add_activation(s, tk.ActivationType.RELU).get_output(0))
        axes = (7, 24) if form == "norm_two_dims" else (24,)
        y = net.add_layer_norm(s, (1 + 0.1 * rng.standard_normal(axes)).astype(np.float32),
                               rng.standard_normal(axes).astype(np.float32), axis=-len(axes)).get_output(0)
        net.mark_output(net.add_activation(y, tk.ActivationType.TANH).get_output(0))
        return net
    return make


def _fused(form: str) -> int:
    rng = np.random.default_rng(0)
    feed = {name: rng.standard_normal(SHAPE).astype(np.float32) for name in ("x", "other")}
    engine = tk.Builder(tk.BuilderConfig()).build(_net(form)())
    reference = tk.Builder(tk.BuilderConfig(passes=pipeline_with("-fuse_add_layer_norm"))).build(_net(form)())
    feed = {t.name: feed[t.name] for t in engine.plan.inputs}
    got, want = engine.create_execution_context().execute(feed), reference.create_execution_context().execute(feed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=TOL.rtol, atol=TOL.atol, err_msg=name)
    kinds = [step.kind for step in engine.plan.steps]
    assert engine.plan.build_info["pass_counts"].get("fuse_add_layer_norm.fused", 0) == kinds.count(
        "fused_add_layer_norm")
    return kinds.count("fused_add_layer_norm") if "layer_norm" not in kinds else -kinds.count("layer_norm")


@pytest.mark.parametrize("form", ["constant", "two_constants", "data"])
def test_sum_and_norm_become_one_layer(form):
    assert _fused(form) == 1


@pytest.mark.parametrize("form", ["norm_two_dims", "three_addends", "sum_read_elsewhere"])
def test_forms_left_alone(form):
    assert _fused(form) == -1
