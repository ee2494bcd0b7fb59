"""Gemm, MatMul, Softmax, LogSoftmax, Hardmax, Det, Einsum against onnxruntime: transposes, alpha/beta,
broadcast C, batched and 1-D MatMul, the coerce-to-2D axis semantics before opset 13."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, rand


@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_transposes(trans_a, trans_b):
    a = rand(*((13, 7) if trans_a else (7, 13)))
    b = rand(*((5, 13) if trans_b else (13, 5)), seed=1)
    check("Gemm", [a, Const(b), Const(rand(5, seed=2))], opset=13, transA=trans_a, transB=trans_b)


@pytest.mark.parametrize("c_shape", [None, (), (1,), (5,), (7, 1), (7, 5)])
@pytest.mark.parametrize("opset", [9, 11, 13])
def test_gemm_alpha_beta_and_broadcast_c(opset, c_shape):
    inputs = [rand(7, 3), Const(rand(3, 5, seed=1))]
    if c_shape is not None:
        inputs.append(Const(rand(*c_shape, seed=2)))
    elif opset < 11:  # C is required before opset 11: a zero C there
        inputs.append(Const(np.zeros((), np.float32)))
    check("Gemm", inputs, opset=opset, alpha=0.7, beta=-1.3)


def test_gemm_with_run_time_operands():
    check("Gemm", [rand(1, 9), rand(9, 11, seed=1), rand(11, seed=2)], opset=13, alpha=2.0)


@pytest.mark.parametrize("lhs, rhs", [
    ((7, 13), (13, 5)),
    ((1, 1), (1, 1)),
    ((13,), (13, 3)),          # 1-D lhs: a vector times a matrix
    ((3, 13), (13,)),          # 1-D rhs
    ((13,), (13,)),            # dot product
    ((2, 3, 7, 9), (9, 5)),    # batched lhs, shared rhs
    ((3, 1, 7, 9), (5, 9, 2)),  # batch dims broadcast
])
def test_matmul_shapes(lhs, rhs):
    check("MatMul", [rand(*lhs), rand(*rhs, seed=1)], opset=13)


def test_matmul_with_constant_weight_at_opset_9():
    check("MatMul", [rand(2, 5, 17), Const(rand(17, 3, seed=1))], opset=9)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_matmul_on_integers(dtype):
    check("MatMul", [rand(3, 7, dtype=dtype, low=-5, high=5), rand(7, 2, dtype=dtype, low=-5, high=5, seed=1)])


def test_matmul_in_float16():
    check("MatMul", [rand(3, 11, dtype=np.float16, low=-1, high=1), rand(11, 5, dtype=np.float16, low=-1, high=1)])


@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1, -3])
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family_axes(op, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    x = rand(3, 5, 7, low=-4, high=4)
    if op == "Hardmax":
        x = np.round(x * 2) / 2  # ties: Hardmax must pick the first maximum
    check(op, [x], opset=opset, **attrs)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_of_a_single_element_and_of_large_logits(op):
    check(op, [rand(1, 1)], opset=13)
    check(op, [rand(2, 13, low=50, high=90)], opset=13, axis=1)


def test_softmax_in_float16():
    check("Softmax", [rand(4, 13, dtype=np.float16)], opset=13)


@pytest.mark.parametrize("shape", [(3, 3), (2, 5, 5), (1, 1), (4, 1, 2, 2)])
def test_det(shape):
    check("Det", [rand(*shape)], opset=11)


@pytest.mark.parametrize("equation, shapes", [
    ("ij,jk->ik", [(7, 5), (5, 3)]),
    ("bij,bjk->bik", [(2, 7, 5), (2, 5, 3)]),
    ("ii->i", [(5, 5)]),
    ("ij->ji", [(3, 7)]),
    ("i,i", [(13,), (13,)]),
    ("...ij,...jk", [(2, 3, 4, 5), (2, 3, 5, 1)]),
    ("bhqd, bhkd -> bhqk", [(1, 2, 7, 5), (1, 2, 3, 5)]),
])
def test_einsum(equation, shapes):
    check("Einsum", [rand(*s, seed=i) for i, s in enumerate(shapes)], opset=12, equation=equation)
