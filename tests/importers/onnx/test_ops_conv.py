"""Conv and ConvTranspose against onnxruntime: 1-D, 2-D and 3-D; strides, dilations, groups (depthwise
too), asymmetric pads, every auto_pad, output_padding and output_shape; prime and size-1 extents."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, rand

CONV_CASES = [
    # (input shape, weight shape, attributes)
    ((1, 3, 7, 9), (5, 3, 3, 3), {}),
    ((2, 3, 13, 11), (7, 3, 3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 4, 13, 13), (6, 2, 3, 3), {"group": 2, "dilations": [2, 3]}),
    ((1, 6, 9, 7), (6, 1, 5, 3), {"group": 6, "pads": [2, 1, 2, 1]}),              # depthwise
    ((1, 3, 7, 9), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 8, 9), (5, 3, 4, 2), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}),
    ((1, 3, 7, 9), (5, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 3]}),
    ((1, 1, 1, 1), (1, 1, 1, 1), {}),
    ((1, 9, 5, 5), (13, 9, 1, 1), {"kernel_shape": [1, 1]}),
    ((3, 5, 17), (4, 5, 3), {"strides": [2], "pads": [0, 2]}),                      # 1-D
    ((1, 2, 5, 7, 6), (3, 2, 2, 3, 2), {"strides": [1, 2, 1], "pads": [1, 0, 1, 0, 1, 1]}),  # 3-D
]


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_CASES)
def test_conv(x_shape, w_shape, attrs, with_bias):
    inputs = [rand(*x_shape), Const(rand(*w_shape, seed=1))]
    if with_bias:
        inputs.append(Const(rand(w_shape[0], seed=2)))
    check("Conv", inputs, opset=11, **attrs)


@pytest.mark.parametrize("opset", [7, 22])
def test_conv_opsets(opset):
    check("Conv", [rand(1, 3, 7, 5), Const(rand(4, 3, 2, 2, seed=1)), Const(rand(4, seed=2))], opset=opset,
          pads=[0, 1, 1, 0])


def test_conv_with_a_run_time_weight():
    check("Conv", [rand(1, 3, 7, 5), rand(4, 3, 3, 3, seed=1)], opset=13)


def test_conv_in_float16():
    check("Conv", [rand(1, 3, 7, 5, dtype=np.float16, low=-1, high=1),
                   Const(rand(4, 3, 3, 3, seed=1, dtype=np.float16, low=-0.5, high=0.5))], opset=13)


DECONV_CASES = [
    ((1, 3, 5, 7), (3, 4, 3, 3), {}),
    ((2, 3, 5, 7), (3, 5, 3, 2), {"strides": [2, 3], "pads": [1, 0, 0, 1]}),
    ((1, 4, 5, 5), (4, 3, 3, 3), {"group": 2, "strides": [2, 2], "output_padding": [1, 0]}),
    ((1, 3, 7, 5), (3, 2, 3, 3), {"dilations": [2, 1], "strides": [1, 2]}),
    ((1, 3, 5, 7), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [11, 14]}),
    ((1, 3, 5, 7), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 15]}),
    ((1, 3, 5, 7), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 14], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 5, 7), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 14], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 5, 7), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 5, 7), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 1, 1, 1), (1, 1, 1, 1), {}),
    ((2, 3, 11), (3, 2, 4), {"strides": [3], "pads": [1, 2]}),                        # 1-D
    ((1, 2, 3, 4, 3), (2, 2, 2, 2, 3), {"strides": [2, 1, 2]}),                          # 3-D
]


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, attrs", DECONV_CASES)
def test_conv_transpose(x_shape, w_shape, attrs, with_bias):
    inputs = [rand(*x_shape), Const(rand(*w_shape, seed=1))]
    if with_bias:
        groups = attrs.get("group", 1)
        inputs.append(Const(rand(w_shape[1] * groups, seed=2)))
    check("ConvTranspose", inputs, opset=11, **attrs)


@pytest.mark.parametrize("opset", [7, 22])
def test_conv_transpose_opsets(opset):
    check("ConvTranspose", [rand(1, 2, 3, 5), Const(rand(2, 3, 2, 3, seed=1))], opset=opset, strides=[2, 2])
