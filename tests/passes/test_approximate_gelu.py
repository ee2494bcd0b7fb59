"""approximate_gelu (opt-in): GELU (erf) layers become the tanh form, within the two forms' known difference."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import tensorkiln as tk
from tensorkiln.passes.manager import DEFAULT_PIPELINE, pipeline_with


def _network():
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (4, 64))
    weight = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32) / 4
    hidden = net.add_fully_connected(x, 32, weight, np.ones(32, np.float32)).get_output(0)
    net.mark_output(net.add_activation(hidden, tk.ActivationType.GELU_ERF).get_output(0))
    return net, weight


def test_the_pass_is_opt_in_and_turns_erf_gelu_into_the_tanh_form():
    assert "approximate_gelu" not in DEFAULT_PIPELINE
    network, weight = _network()
    engine = tk.Builder(tk.BuilderConfig(passes=pipeline_with("+approximate_gelu"))).build(network)
    assert engine.plan.build_info["pass_counts"]["approximate_gelu.approximated"] == 1
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32) * 3
    out = engine.create_execution_context().execute({"x": x})
    (got,) = out.values()
    pre = torch.from_numpy(x) @ torch.from_numpy(weight).T + 1
    np.testing.assert_allclose(got, F.gelu(pre, approximate="tanh").numpy(), rtol=1e-5, atol=1e-5)
    difference = np.abs(got - F.gelu(pre).numpy()).max()
    assert 0 < difference < 5e-4  # the forms differ, by no more than GELU's known approximation error
