"""Softmax over a short axis of many rows (kernels/cpu/linalg.py moves the axis outermost first: torch's kernel is
slow on a short innermost axis): the same values as a float64 reference, for every axis position, input layouts
that are views, log-softmax, infinities and NaN rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorkiln.ir import ops
from tensorkiln.kernels.cpu.linalg import softmax


def _reference(x: torch.Tensor, axis: int, log: bool) -> np.ndarray:
    values = x.double().numpy()
    with np.errstate(invalid="ignore"):  # a row holding +inf: inf - inf is NaN, as in torch and onnxruntime
        shifted = values - values.max(axis=axis, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=axis, keepdims=True)
        return shifted - np.log(total) if log else exp / total


CASES = [
    ((4125, 2), 1, "plain"),  # MTCNN P-Net's face classes
    ((2, 4125), 0, "transposed"),  # the same rows as a transposed view, as its Shuffle leaves them
    ((3, 300, 5), 1, "plain"),  # a middle axis
    ((7, 13, 3), -1, "plain"),  # fewer rows than the threshold: torch's own kernel
    ((1, 3, 200, 7), 3, "channels_last"),
    ((600, 15), 1, "plain"),  # just under a vector of 16
    ((600, 16), 1, "plain"),  # not short: torch's own kernel
]


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,axis,layout", CASES, ids=str)
def test_matches_float64_reference(shape, axis, layout, log):
    torch.manual_seed(0)
    x = torch.randn(shape) * 4
    if layout == "transposed":
        x, axis = x.t(), 1 - axis
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    flat = x.reshape(-1)
    if flat.numel() > 20:
        x = x.clone()
        x.reshape(-1)[3] = float("inf")
    expected = _reference(x, axis % x.dim(), log)
    result = softmax(ops.Softmax(axis=axis, log=log), [x])[0]
    assert result.shape == x.shape
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_nan_row_stays_nan_and_input_is_kept():
    x = torch.randn(1000, 3)
    x[5, 1] = float("nan")
    kept = x.clone()
    result = softmax(ops.Softmax(axis=1), [x])[0]
    assert torch.isnan(result[5]).all() and not torch.isnan(result[torch.arange(1000) != 5]).any()
    assert torch.equal(x.nan_to_num(), kept.nan_to_num())
