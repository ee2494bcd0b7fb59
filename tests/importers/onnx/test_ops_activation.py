"""Activations against onnxruntime: default and non-default attributes, awkward shapes, Clip across the
attribute -> input change (opset 11), PRelu slopes that broadcast, Gelu's two forms, Shrink, Swish."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, rand

SHAPES = [(1,), (7, 13), (2, 3, 5, 9)]

# op -> (opset, non-default attributes)
ACTIVATIONS = {
    "Relu": (14, {}), "Sigmoid": (13, {}), "Tanh": (13, {}), "Softplus": (7, {}), "Softsign": (7, {}),
    "HardSwish": (14, {}), "Mish": (18, {}),
    "LeakyRelu": (16, {"alpha": 0.37}), "Elu": (7, {"alpha": 0.6}), "Selu": (7, {"alpha": 1.3, "gamma": 0.7}),
    "Celu": (12, {"alpha": 0.45}), "HardSigmoid": (7, {"alpha": 0.31, "beta": 0.43}),
    "ThresholdedRelu": (10, {"alpha": 0.8}),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", sorted(ACTIVATIONS))
def test_activation_defaults(op, shape):
    opset = ACTIVATIONS[op][0]
    check(op, [rand(*shape, low=-4, high=4)], opset=opset)


@pytest.mark.parametrize("op", sorted(op for op, (_, attrs) in ACTIVATIONS.items() if attrs))
def test_activation_attributes(op):
    opset, attrs = ACTIVATIONS[op]
    check(op, [rand(3, 13, low=-4, high=4)], opset=opset, **attrs)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "HardSigmoid", "Softplus"])
def test_activation_in_float16(op):
    check(op, [rand(5, 11, low=-4, high=4, dtype=np.float16)], opset=ACTIVATIONS[op][0])


@pytest.mark.parametrize("slope_shape", [(1,), (5, 1, 1), (9,), (1, 1, 9), ()])
def test_prelu_slopes_broadcast(slope_shape):
    check("PRelu", [rand(2, 5, 3, 9), Const(rand(*slope_shape, seed=3))], opset=16)


def test_prelu_with_a_run_time_slope():
    check("PRelu", [rand(3, 7), rand(7, seed=1)], opset=9)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    check("Gelu", [rand(3, 13, low=-4, high=4)], opset=20, approximate=approximate)


@pytest.mark.parametrize("attrs", [{}, {"min": -0.5}, {"max": 0.7}, {"min": -1.2, "max": 0.3}])
def test_clip_with_attributes_before_opset_11(attrs):
    check("Clip", [rand(7, 13)], opset=7, **attrs)


@pytest.mark.parametrize("bounds", [(None, None), (-0.5, None), (None, 0.7), (-1.2, 0.3)])
@pytest.mark.parametrize("opset", [11, 13])
def test_clip_with_inputs_from_opset_11(opset, bounds):
    low, high = (None if b is None else Const(np.array(b, np.float32)) for b in bounds)
    inputs = [rand(7, 13), low, high]
    while inputs[-1] is None and len(inputs) > 1:
        inputs.pop()
    check("Clip", inputs, opset=opset)


def test_clip_with_min_above_max_gives_max():
    check("Clip", [rand(3, 7), Const(np.float32(1)), Const(np.float32(-1))], opset=13)


@pytest.mark.parametrize("dtype", [np.int8, np.int32])
def test_relu_on_integers(dtype):
    check("Relu", [rand(3, 7, dtype=dtype, low=-100, high=100)], opset=14)


@pytest.mark.parametrize("op, opset, attrs", [("Selu", 7, {}), ("HardSigmoid", 7, {"alpha": 0.3, "beta": 0.6}),
                                              ("Gelu", 20, {}), ("Swish", 24, {"alpha": 0.5}), ("Shrink", 9,
                                                                                                 {"bias": 0.2})])
def test_more_activations_in_float16(op, opset, attrs):
    check(op, [rand(3, 7, dtype=np.float16, low=-3, high=3)], opset=opset, **attrs)


def test_prelu_in_float16():
    check("PRelu", [rand(3, 7, dtype=np.float16), Const(rand(7, dtype=np.float16, seed=1))], opset=16)


def test_clip_on_integers():
    check("Clip", [rand(3, 7, dtype=np.int64, low=-10, high=10), Const(np.int64(-3)), Const(np.int64(4))], opset=13)


@pytest.mark.parametrize("attrs", [{}, {"bias": 0.25, "lambd": 1.1}, {"lambd": 0.0}])
def test_shrink(attrs):
    check("Shrink", [rand(5, 13, low=-3, high=3)], opset=9, **attrs)


@pytest.mark.parametrize("alpha", [1.0, 0.35])
def test_swish(alpha):
    check("Swish", [rand(3, 13, low=-5, high=5)], opset=24, alpha=alpha)
