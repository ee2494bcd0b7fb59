"""Normalizations against onnxruntime: BatchNormalization (constant and run-time statistics),
LayerNormalization (axes, epsilon, the Mean and InvStdDev outputs), LRN, InstanceNormalization,
GroupNormalization (per-group scale at opset 18, per-channel at 21), LpNormalization, MVN."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, positive, rand


def _bn_inputs(channels, constant=True):
    values = [rand(channels, seed=1), rand(channels, seed=2), rand(channels, seed=3), positive(channels, seed=4)]
    return [Const(v) if constant else v for v in values]


@pytest.mark.parametrize("shape", [(2, 7), (1, 3, 13), (2, 5, 7, 3), (1, 1, 1, 1), (1, 3, 2, 3, 5)])
@pytest.mark.parametrize("opset", [9, 15])
def test_batch_normalization(shape, opset):
    check("BatchNormalization", [rand(*shape), *_bn_inputs(shape[1])], opset=opset, epsilon=0.013)


def test_batch_normalization_with_run_time_statistics():
    check("BatchNormalization", [rand(2, 5, 7, 3), *_bn_inputs(5, constant=False)], opset=15)


def test_batch_normalization_in_float16():
    inputs = [rand(1, 3, 5, 7, dtype=np.float16), *_bn_inputs(3)]
    inputs[1:] = [Const(v.value.astype(np.float16)) for v in inputs[1:]]
    check("BatchNormalization", inputs, opset=15)


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_normalization(axis, with_bias):
    shape = (3, 7, 5)
    normalized = shape[axis % 3:]
    inputs = [rand(*shape), Const(rand(*normalized, seed=1))]
    if with_bias:
        inputs.append(Const(rand(*normalized, seed=2)))
    check("LayerNormalization", inputs, opset=17, axis=axis, epsilon=1e-3)


def test_layer_normalization_mean_and_inverse_std_outputs():
    check("LayerNormalization", [rand(2, 13, 3), Const(rand(13, 3, seed=1)), Const(rand(13, 3, seed=2))], opset=17,
          n_outputs=3, axis=1)


def test_layer_normalization_with_run_time_scale_broadcast():
    check("LayerNormalization", [rand(2, 3, 9), rand(9, seed=1)], opset=17)


@pytest.mark.parametrize("attrs", [{"size": 3}, {"size": 5, "alpha": 0.02, "beta": 0.6, "bias": 2.0}, {"size": 1}])
def test_lrn(attrs):
    check("LRN", [rand(2, 7, 5, 3)], opset=13, **attrs)


@pytest.mark.parametrize("size", [2, 4])
def test_lrn_of_even_size(size):
    # onnxruntime runs odd sizes only; the ONNX definition, written here, takes floor((size-1)/2) channels
    # before c and ceil((size-1)/2) after it
    alpha, beta, bias = 0.03, 0.7, 1.5

    def reference(x):
        squares = x.astype(np.float64) ** 2
        total = np.zeros_like(squares)
        channels = x.shape[1]
        for c in range(channels):
            low, high = max(0, c - (size - 1) // 2), min(channels - 1, c + -(-(size - 1) // 2))
            total[:, c] = squares[:, low:high + 1].sum(axis=1)
        return [(x / (bias + alpha / size * total) ** beta).astype(np.float32)]

    check("LRN", [rand(2, 7, 5, 3)], opset=13, reference=reference, size=size, alpha=alpha, beta=beta, bias=bias)


@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 5, 3, 4), (1, 2, 1, 1, 5)])
def test_instance_normalization(shape):
    check("InstanceNormalization", [rand(*shape), Const(rand(shape[1], seed=1)), Const(rand(shape[1], seed=2))],
          opset=22 if len(shape) == 3 else 7, epsilon=0.01)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_normalization_per_channel_scale(groups):
    check("GroupNormalization", [rand(2, 6, 5, 3), Const(rand(6, seed=1)), Const(rand(6, seed=2))], opset=21,
          num_groups=groups, epsilon=0.01)


@pytest.mark.parametrize("groups", [1, 3])
def test_group_normalization_per_group_scale_at_opset_18(groups):
    # GroupNormalization-18 (scale and bias per group) is deprecated; onnxruntime no longer runs it, so the
    # reference is written here: normalize each group, then scale and shift it with its group's values
    def reference(x, scale, bias):
        n, c = x.shape[:2]
        grouped = x.reshape(n, groups, -1).astype(np.float64)
        normalized = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + 0.01)
        y = normalized.reshape(n, groups, -1) * scale.reshape(1, groups, 1) + bias.reshape(1, groups, 1)
        return [y.reshape(x.shape).astype(np.float32)]

    check("GroupNormalization", [rand(2, 6, 5, 3), Const(rand(groups, seed=1)), Const(rand(groups, seed=2))],
          opset=18, num_groups=groups, epsilon=0.01, reference=reference)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization(p, axis):
    check("LpNormalization", [rand(3, 7, 5)], opset=22, p=p, axis=axis)


@pytest.mark.parametrize("axes", [None, [1], [0, 2, 3], [-1]])
def test_mean_variance_normalization(axes):
    check("MeanVarianceNormalization", [rand(2, 3, 5, 7)], opset=13, **({} if axes is None else {"axes": axes}))


def test_lp_normalization_keeps_a_zero_vector_zero():
    check("LpNormalization", [np.array([[0, 0, 0], [1, 2, 3], [0, -0.5, 0]], np.float32)], opset=7, p=2, axis=1)
    check("LpNormalization", [np.array([[0, 0, 0], [1, 2, 3]], np.float32)], opset=7, p=1, axis=1)


def test_mean_variance_normalization_of_a_constant_input():
    # onnxruntime 1.32 returns NaN here; the ONNX definition (x - mean) / sqrt(var + 1e-9) is 0
    check("MeanVarianceNormalization", [np.ones((1, 2, 3, 3), np.float32)], opset=13, reference="onnx")
