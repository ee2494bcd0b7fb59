"""FP16 precision assignment: layers whose values leave FP16's safe range stay FP32, attention masks excepted."""
from __future__ import annotations

import numpy as np
import torch

import tensorkiln as tk
from tensorkiln.ir import ops
from tensorkiln.passes.manager import PassManager
from tensorkiln.quant.precision import Precision, assign_precisions


def _network(mask_value: float):
    network = tk.NetworkDefinition()
    q = network.add_input("q", tk.DataType.FLOAT, (1, 2, 5, 8))
    mask = network.add_constant((1, 1, 1, 5), np.array([0, 0, 0, mask_value, mask_value], np.float32)).get_output(0)
    attention = network.add_layer(ops.Attention(scale=0.35, has_mask=True), [q, q, q, mask], name="attention")
    huge = network.add_scale(attention.get_output(0), tk.ScaleMode.UNIFORM, scale=np.array([1e6], np.float32),
                              name="huge")
    network.mark_output(huge.get_output(0))
    PassManager(("fold_constants",)).run(network.ir)  # the builder folds the constant layer before assigning
    return network.ir


def test_large_additive_mask_does_not_keep_attention_in_fp32():
    overrides, log = assign_precisions(_network(-1e5), Precision.FP16, (), torch.device("cpu"))
    assert "attention" not in overrides
    assert overrides == {"huge": "fp32"} and any("huge: kept in fp32" in line for line in log)


def test_requested_overrides_win_and_are_logged():
    overrides, log = assign_precisions(_network(-1.0), Precision.FP16, (("attention", Precision.FP32),),
                                       torch.device("cpu"))
    assert overrides == {"attention": "fp32", "huge": "fp32"}
    assert "attention: fp32 (requested)" in log
