"""Indexing against onnxruntime: TopK (K as attribute before opset 10, as input after; largest, sorted),
GatherElements, GatherND (batch_dims), ScatterElements / Scatter (reductions), ScatterND, OneHot, Trilu;
negative indices and axes everywhere."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, rand


def ints(*values):
    return Const(np.array(values, np.int64))


def distinct(*shape, seed=0):
    """Values without ties, so that TopK's order is defined."""
    size = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size).reshape(shape) / 7.0 - 3).astype(np.float32)


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis, k", [(-1, 1), (-1, 7), (1, 4), (0, 2)])
def test_top_k(axis, k, largest):
    check("TopK", [distinct(3, 13, 7) if axis != -1 else distinct(5, 7), ints(k)], opset=11, n_outputs=2, axis=axis,
          largest=largest)


def test_top_k_with_ties_picks_lower_indices_first():
    x = np.array([[3, 1, 3, 2, 3, 1, 2]], np.float32)
    check("TopK", [x, ints(4)], opset=11, n_outputs=2)
    check("TopK", [x, ints(4)], opset=11, n_outputs=2, largest=0)


@pytest.mark.parametrize("opset", [7, 10])
def test_top_k_before_k_became_an_input(opset):
    if opset < 10:
        check("TopK", [distinct(4, 9)], opset=opset, n_outputs=2, k=3)
    else:
        check("TopK", [distinct(4, 9), ints(3)], opset=opset, n_outputs=2)


def test_top_k_on_integers():
    x = np.random.default_rng(0).permutation(26).reshape(2, 13).astype(np.int64)
    check("TopK", [x, ints(5)], opset=11, n_outputs=2)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis):
    x = rand(3, 7, 5)
    index_shape = [3, 7, 5]
    index_shape[axis] = 2
    extent = x.shape[axis]
    indices = np.random.default_rng(1).integers(-extent, extent, size=index_shape).astype(np.int64)
    check("GatherElements", [x, Const(indices)], opset=13, axis=axis)


@pytest.mark.parametrize("batch_dims, data_shape, indices", [
    (0, (3, 5), [[0, 1], [2, -1]]),
    (0, (3, 5, 2), [[1], [-1]]),
    (0, (2, 3, 5), [[[1, 2, 4]], [[0, 0, 0]]]),
    (1, (2, 3, 5), [[1], [2]]),
    (1, (2, 3, 5), [[[0, 4], [2, 1]], [[1, 1], [0, -2]]]),
])
def test_gather_nd(batch_dims, data_shape, indices):
    check("GatherND", [rand(*data_shape), Const(np.array(indices, np.int64))],
          opset=13, batch_dims=batch_dims)


def _scatter_indices(data_shape, update_shape, axis, seed=0):
    """Indices without duplicates along `axis` (duplicates make 'none' reduction order-dependent)."""
    rng = np.random.default_rng(seed)
    extent = data_shape[axis]
    moved = np.moveaxis(np.zeros(update_shape, np.int64), axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    for row in flat:
        row[:] = rng.permutation(extent)[:len(row)]
    return np.moveaxis(flat.reshape(moved.shape), -1, axis) - np.where(rng.random(update_shape) < 0.3, extent, 0)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, -1])
def test_scatter_elements(axis, reduction):
    data_shape, update_shape = (5, 7), (3, 4)
    indices = _scatter_indices(data_shape, update_shape, axis)
    attrs = {} if reduction == "none" else {"reduction": reduction}
    check("ScatterElements", [rand(*data_shape), Const(indices), rand(*update_shape, seed=1)],
          opset=18, axis=axis, **attrs)


def test_scatter_elements_with_duplicate_indices_adds_them():
    indices = np.array([[1, 1, 0], [2, 2, 2]], np.int64)
    check("ScatterElements", [rand(3, 3), Const(indices), rand(2, 3, seed=1)], opset=16, axis=1, reduction="add")


def test_scatter_at_opset_9():
    indices = _scatter_indices((4, 6), (4, 2), 1)
    check("Scatter", [rand(4, 6), Const(indices), rand(4, 2, seed=1)], opset=9, axis=1)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("indices, update_shape", [
    ([[1], [-1]], (2, 5, 3)),
    ([[0, 2], [3, 1], [1, 4]], (3, 3)),
    ([[[0, 1, 2]]], (1, 1)),
])
def test_scatter_nd(indices, update_shape, reduction):
    attrs = {} if reduction == "none" else {"reduction": reduction}
    check("ScatterND", [rand(4, 5, 3), Const(np.array(indices, np.int64)), rand(*update_shape, seed=1)],
          opset=18, **attrs)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("depth_dtype", [np.int64, np.float32])
def test_one_hot(axis, depth_dtype):
    indices = np.array([[0, 3, -1], [6, -7, 2]], np.int64)
    check("OneHot", [indices, Const(np.array(7, depth_dtype)), Const(np.array([-0.5, 2.0], np.float32))],
          opset=11, axis=axis)


def test_one_hot_with_float_indices_and_int_values():
    indices = np.array([1.0, 4.0, 0.0], np.float32)
    check("OneHot", [indices, Const(np.array([5], np.int64)), Const(np.array([0, 9], np.int64))], opset=11)


@pytest.mark.parametrize("k", [None, 0, 2, -1, -9, 9])
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(upper, k):
    inputs = [rand(2, 5, 7)] + ([] if k is None else [Const(np.array(k, np.int64))])
    check("Trilu", inputs, opset=14, upper=upper)


def test_run_time_negative_indices():
    check("Gather", [rand(7, 4), np.array([[-1, 0, -7]], np.int64)], opset=13, axis=0)
    check("GatherElements", [rand(3, 4), np.array([[-1, 0], [2, -4], [1, 1]], np.int64)], opset=13, axis=1)
    check("ScatterND", [rand(4, 3), np.array([[1], [-1]], np.int64), rand(2, 3, seed=1)], opset=16)


def test_top_k_of_the_whole_axis():
    check("TopK", [distinct(3, 7), ints(7)], opset=11, n_outputs=2)


def test_cumsum_of_run_time_int32_reversed_and_exclusive():
    check("CumSum", [rand(3, 7, dtype=np.int32, low=-9, high=9), Const(np.int32(-1))], opset=14, reverse=1,
          exclusive=1)


@pytest.mark.parametrize("equation, shapes", [("ij->", [(3, 7)]), ("i,j->ij", [(3,), (5,)]),
                                              ("ij,ij->i", [(4, 7)] * 2)])
def test_einsum_reductions_and_outer_products(equation, shapes):
    check("Einsum", [rand(*s, seed=i) for i, s in enumerate(shapes)], opset=12, equation=equation)


def test_trilu_on_integers_and_one_hot_on_a_middle_axis():
    check("Trilu", [rand(3, 7, dtype=np.int64, low=-5, high=5), Const(np.int64(-1))], opset=14, upper=0)
    check("OneHot", [np.array([[1, 2], [0, 3]], np.int64), ints(4), Const(np.array([0, 1], np.float32))], opset=11,
          axis=-2)
