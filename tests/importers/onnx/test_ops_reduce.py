"""Reductions against onnxruntime: every Reduce* op with axes as an attribute (before opset 13/18) and as
an input (after), negative axes, keepdims=0, empty axes with and without noop_with_empty_axes; ArgMax and
ArgMin with select_last_index and ties; CumSum with exclusive and reverse."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, positive, rand

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
AXES = [None, [0], [-1], [1, -1], [0, 1, 2]]


def _axes_as_input(op: str, opset: int) -> bool:
    return opset >= (13 if op == "ReduceSum" else 18)


def _reduce(op, x, opset, axes, **attrs):
    if axes is not None and _axes_as_input(op, opset):
        return check(op, [x, Const(np.array(axes, np.int64))], opset=opset, **attrs)
    return check(op, [x], opset=opset, **({} if axes is None else {"axes": axes}), **attrs)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce(op, opset, axes, keepdims):
    x = positive(3, 7, 5, seed=1) if op in ("ReduceLogSum", "ReduceProd") else rand(3, 7, 5, seed=1)
    if op == "ReduceProd":
        x = x ** 0.25  # keep the product of up to 105 elements of order 1
    _reduce(op, x, opset, axes, keepdims=keepdims)


@pytest.mark.parametrize("opset", [11, 13])
def test_reduce_sum_at_the_opset_where_axes_became_an_input(opset):
    _reduce("ReduceSum", rand(2, 13, 3), opset, [-2], keepdims=0)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax"])
def test_empty_axes_without_noop_reduce_everything(op):
    check(op, [rand(2, 7, 3), Const(np.array([], np.int64))], opset=18, keepdims=1)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_no_axes_with_noop_with_empty_axes_keeps_only_the_elementwise_steps(op):
    # an identity for plain reductions; composite ones still apply theirs (log for ReduceLogSum, square, abs)
    x = positive(2, 7, 3) if op == "ReduceLogSum" else rand(2, 7, 3)
    check(op, [x], opset=18, noop_with_empty_axes=1)
    check(op, [x, Const(np.array([], np.int64))], opset=18, noop_with_empty_axes=1)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_on_integers(op, dtype):
    _reduce(op, rand(3, 7, dtype=dtype, low=-4, high=5), 18, [1], keepdims=0)


def test_reduce_mean_of_integers_truncates_toward_zero():
    x = np.array([[-7, 0, 0], [7, 1, 0], [-5, -1, 0], [5, -1, -1]], np.int32)
    _reduce("ReduceMean", x, 13, [1], keepdims=0)
    _reduce("ReduceMean", rand(3, 7, 5, dtype=np.int64, low=-50, high=50), 18, [0, -1], keepdims=1)


def test_reduce_in_float16():
    _reduce("ReduceMean", rand(3, 13, dtype=np.float16), 18, [-1], keepdims=1)
    _reduce("ReduceMax", rand(3, 13, dtype=np.float16), 13, [0], keepdims=0)


def test_reduce_over_size_one_and_prime_extents():
    _reduce("ReduceSum", rand(1, 13, 1), 18, [0, 2], keepdims=0)
    _reduce("ReduceMean", rand(7, 1), 11, [1], keepdims=1)


@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reduce_with_ties(op, axis, keepdims, select_last_index):
    x = np.round(rand(3, 7, 5, low=-2, high=2))  # few distinct values: many ties
    check(op, [x], opset=13, axis=axis, keepdims=keepdims, select_last_index=select_last_index)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reduce_defaults_and_integers(op):
    check(op, [rand(13, 3)], opset=11)
    check(op, [rand(4, 9, dtype=np.int32, low=-50, high=50)], opset=13, axis=-1)


@pytest.mark.parametrize("exclusive, reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("axis", [0, -1, 1])
def test_cumsum(axis, exclusive, reverse):
    check("CumSum", [rand(3, 7, 5), Const(np.array(axis, np.int64))], opset=14, exclusive=exclusive, reverse=reverse)


@pytest.mark.parametrize("axis_dtype", [np.int32, np.int64])
def test_cumsum_on_integers_with_an_int32_axis(axis_dtype):
    check("CumSum", [rand(13, dtype=np.int64, low=-9, high=9), Const(np.array([0], axis_dtype))], opset=11)
