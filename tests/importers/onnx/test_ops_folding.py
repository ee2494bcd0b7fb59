"""Nodes whose inputs are all known at build time: the builder folds them (running the same kernels at build
time), and the folded values must still agree with onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from onnx_case import Const, check, positive, rand


def ints(*values):
    return Const(np.array(values, np.int64))


def C(array):  # noqa: N802 (short: every input below is one)
    return Const(array)


CASES = [
    # (op, inputs, attributes, opset)
    ("Add", [C(rand(3, 1, 7)), C(rand(5, 1, seed=1))], {}, 14),
    ("Conv", [C(rand(1, 3, 7, 9)), C(rand(5, 3, 3, 2, seed=1)), C(rand(5, seed=2))],
     {"strides": [2, 1], "pads": [1, 0, 2, 1]}, 11),
    ("ConvTranspose", [C(rand(1, 3, 5, 7)), C(rand(3, 2, 3, 3, seed=1))],
     {"strides": [2, 2], "output_shape": [11, 14]}, 11),
    ("MatMul", [C(rand(2, 3, 7)), C(rand(7, 5, seed=1))], {}, 13),
    ("Gemm", [C(rand(7, 3)), C(rand(5, 3, seed=1)), C(rand(5, seed=2))], {"transB": 1, "alpha": 0.5, "beta": 2.0}, 13),
    ("Softmax", [C(rand(3, 5, 7))], {"axis": 1}, 11),
    ("ReduceSum", [C(rand(3, 7, 5)), ints(-1)], {"keepdims": 0}, 13),
    ("ReduceL2", [C(rand(3, 7, 5))], {"noop_with_empty_axes": 1}, 18),
    ("ReduceMean", [C(rand(3, 7, dtype=np.int32, low=-9, high=9)), ints(1)], {}, 18),
    ("Transpose", [C(rand(2, 7, 3))], {"perm": [2, 0, 1]}, 13),
    ("Gather", [C(rand(3, 5, 7)), ints(-1, 0)], {"axis": 1}, 13),
    ("Slice", [C(rand(3, 7)), ints(-1), ints(-100), ints(1), ints(-2)], {}, 13),
    ("Slice", [C(rand(3, 7)), ints(0), ints(6), ints(1), ints(-2)], {}, 13),
    ("Concat", [C(rand(2, 3)), C(rand(5, 3, seed=1))], {"axis": -2}, 13),
    ("Cast", [C(rand(3, 7, low=-50, high=50))], {"to": TensorProto.INT32}, 13),
    ("Where", [C(rand(3, 7, dtype=np.bool_)), C(rand(3, 7)), C(rand(7, seed=1))], {}, 16),
    ("Pad", [C(rand(3, 5)), ints(1, 2, 0, 1)], {"mode": "reflect"}, 13),
    ("Resize", [C(rand(1, 2, 5, 7)), C(np.array([], np.float32)), C(np.array([1, 1, 2, 1.5], np.float32))],
     {"mode": "linear"}, 13),
    ("TopK", [C(rand(3, 7)), ints(3)], {}, 11),
    ("Split", [C(rand(4, 7)), ints(3, 4)], {"axis": 1}, 13),
    ("BatchNormalization", [C(rand(2, 3, 5)), C(rand(3)), C(rand(3, seed=1)), C(rand(3, seed=2)), C(positive(3))],
     {}, 15),
    ("LayerNormalization", [C(rand(2, 3, 5)), C(rand(5))], {}, 17),
    ("IsInf", [C(np.array([np.inf, -np.inf, 1, 0], np.float32))], {"detect_positive": 0, "detect_negative": 0}, 10),
    ("Reshape", [C(np.zeros((2, 0, 7), np.float32)), ints(0, 7)], {"allowzero": 1}, 14),
    ("MaxPool", [C(rand(1, 2, 7, 9))], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 12),
    ("Einsum", [C(rand(3, 4)), C(rand(4, 5, seed=1))], {"equation": "ij,jk->ik"}, 12),
    ("CumSum", [C(rand(3, 7)), ints(1)], {"reverse": 1}, 14),
    ("Expand", [C(rand(3, 1)), ints(2, 3, 7)], {}, 13),
    ("Tile", [C(rand(2, 3)), ints(2, 2)], {}, 13),
    ("Mod", [C(np.array([-7, 7, 5], np.int64)), C(np.array([3, -3, 2], np.int64))], {}, 13),
    ("Div", [C(np.array([-7, 7, 5], np.int64)), C(np.array([2, -2, 2], np.int64))], {}, 13),
    ("QuantizeLinear", [C(rand(3, 7, low=-40, high=40)), C(np.float32(0.25)), C(np.int8(-3))], {}, 13),
    ("DequantizeLinear", [C(rand(3, 7, dtype=np.int8, low=-100, high=100)), C(np.float32(0.25)), C(np.int8(-3))],
     {}, 13),
    ("Trilu", [C(rand(3, 7))], {"upper": 0}, 14),
    ("GatherND", [C(rand(2, 3, 5)), C(np.array([[1], [2]], np.int64))], {"batch_dims": 1}, 13),
    ("ScatterElements", [C(rand(3, 3)), C(np.array([[1, 1, 0], [2, 2, 2]], np.int64)), C(rand(2, 3, seed=1))],
     {"axis": 1, "reduction": "add"}, 16),
    ("Hardmax", [C(np.round(rand(3, 5)))], {}, 13),
    ("ArgMin", [C(np.round(rand(3, 5)))], {"axis": 1, "select_last_index": 1}, 13),
    ("Shrink", [C(rand(3, 5))], {"lambd": 0.7, "bias": 0.1}, 9),
    ("Sum", [C(rand(3, 5)), C(rand(5, seed=1)), C(rand(1, seed=2))], {}, 13),
    ("Mean", [C(rand(3, 5)), C(rand(5, seed=1))], {}, 13),
    ("GroupNormalization", [C(rand(2, 6, 5)), C(rand(6)), C(rand(6, seed=1))], {"num_groups": 3}, 21),
    ("InstanceNormalization", [C(rand(2, 3, 5)), C(rand(3)), C(rand(3, seed=1))], {}, 7),
    ("LpNormalization", [C(rand(3, 5))], {"axis": 0, "p": 1}, 7),
    ("OneHot", [C(np.array([0, 3, -1], np.int64)), C(np.array(5, np.int64)), C(np.array([0, 1], np.float32))], {}, 11),
    ("Pow", [C(positive(3, 5)), C(rand(5))], {}, 15),
    ("Clip", [C(rand(3, 5)), C(np.float32(-0.5)), C(np.float32(0.5))], {}, 13),
    ("PRelu", [C(rand(3, 5)), C(rand(5))], {}, 16),
    ("GridSample", [C(rand(1, 2, 4, 6)), C(rand(1, 3, 5, 2, low=-1, high=1))], {"mode": "linear"}, 20),
    ("DepthToSpace", [C(rand(1, 8, 2, 3))], {"blocksize": 2, "mode": "CRD"}, 13),
    ("Det", [C(rand(2, 3, 3))], {}, 11),
    ("Squeeze", [C(rand(1, 7, 1)), ints(-1)], {}, 13),
    ("Flatten", [C(rand(2, 3, 1, 7))], {"axis": -2}, 13),
]


@pytest.mark.parametrize("op, inputs, attrs, opset", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_folded_node_matches_onnxruntime(op, inputs, attrs, opset):
    check(op, inputs, opset=opset, n_outputs=2 if op in ("TopK", "Split") else 1, **attrs)
