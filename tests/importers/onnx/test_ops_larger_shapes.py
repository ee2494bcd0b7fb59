"""Shapes past the sizes kernels block on (primes above 64, long reductions), against onnxruntime. Inputs lie
in [-1, 1] so that a sum of a few hundred products stays of magnitude about 1, which the tolerance table's
float32 entry assumes."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, positive, rand


def unit(*shape, seed=0):
    return rand(*shape, low=-1, high=1, seed=seed)


def axes(*values):
    return Const(np.array(values, np.int64))


CASES = {
    "matmul_65x129x33": lambda: check("MatMul", [unit(65, 129), unit(129, 33, seed=1)], opset=13),
    "batched_matmul_k257": lambda: check("MatMul", [unit(3, 17, 257), unit(257, 9, seed=1)], opset=13),
    "gemm_transposed_k513": lambda: check("Gemm", [unit(37, 513), Const(unit(129, 513, seed=1))], opset=13, transB=1),
    "conv_17_to_23_channels": lambda: check("Conv", [unit(2, 17, 33, 31), Const(unit(23, 17, 3, 3, seed=1))],
                                            opset=13, pads=[1, 1, 1, 1]),
    "depthwise_conv_32": lambda: check("Conv", [unit(1, 32, 29, 29), Const(unit(32, 1, 3, 3, seed=1))], opset=13,
                                       group=32, strides=[2, 2]),
    "conv_transpose_17_to_9": lambda: check("ConvTranspose", [unit(1, 17, 13, 11), Const(unit(17, 9, 4, 4, seed=1))],
                                            opset=13, strides=[2, 2], pads=[1, 1, 1, 1]),
    "reduce_sum_4099": lambda: check("ReduceSum", [unit(7, 4099)], opset=13),
    "reduce_mean_4099": lambda: check("ReduceMean", [unit(7, 4099), axes(1)], opset=18),
    "reduce_log_sum_exp_2049": lambda: check("ReduceLogSumExp", [rand(3, 2049, low=-20, high=20), axes(-1)],
                                             opset=18),
    "softmax_1031": lambda: check("Softmax", [rand(7, 1031, low=-10, high=10)], opset=13),
    "layer_norm_1023": lambda: check("LayerNormalization", [unit(5, 1023), Const(unit(1023, seed=1))], opset=17),
    "group_norm_33_channels": lambda: check("GroupNormalization", [unit(2, 33, 17, 13), Const(unit(33)),
                                                                   Const(unit(33, seed=1))], opset=21, num_groups=11),
    "batch_norm_run_time_33": lambda: check("BatchNormalization", [unit(2, 33, 17, 9), unit(33), unit(33, seed=1),
                                                                   unit(33, seed=2), positive(33)], opset=15),
    "average_pool_67x45": lambda: check("AveragePool", [unit(1, 19, 67, 45)], opset=19, kernel_shape=[5, 5],
                                        strides=[3, 3], pads=[2, 2, 2, 2]),
    "resize_cubic_31x45": lambda: check("Resize", [unit(1, 3, 31, 45), Const(np.array([], np.float32)),
                                                   Const(np.array([1, 1, 2.5, 1.7], np.float32))], opset=13,
                                        mode="cubic"),
    "cumsum_1031": lambda: check("CumSum", [unit(3, 1031), Const(np.array(1, np.int64))], opset=14),
    "attention_scores_einsum": lambda: check("Einsum", [unit(2, 3, 17, 65), unit(2, 3, 29, 65, seed=1)], opset=12,
                                             equation="bhqd,bhkd->bhqk"),
    "lrn_33_channels": lambda: check("LRN", [unit(2, 33, 9, 9)], opset=13, size=5),
    "det_7x7": lambda: check("Det", [unit(4, 7, 7)], opset=11),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_larger_shape(case):
    CASES[case]()
