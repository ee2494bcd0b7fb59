"""How far one tensor is from its reference: the numbers `kiln compare` prints per output and per layer.

An element passes when |actual - expected| <= atol + rtol * |expected| (numpy's allclose rule, as Polygraphy and
the test suite use it). NaN matches NaN and an infinity matches the same infinity; any other disagreement about
a non-finite value (NaN in one and a number in the other, an infinity against a number) fails the element.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    def __str__(self) -> str:
        return f"atol {self.atol:g}, rtol {self.rtol:g}"


# Defaults per engine precision, for whole networks (errors add up over layers) on inputs of magnitude about 1.
# fp32: a few hundred ulp after some tens of layers, as a CPU or cuDNN convolution sums in another order than
# onnxruntime; fp16/bf16: a few roundings of 2^-11 / 2^-8; int8: a few quantization steps of 1/127 of a range.
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "tf32": Tolerance(atol=5e-3, rtol=5e-3),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2),
    "bf16": Tolerance(atol=5e-2, rtol=5e-2),
    "int8": Tolerance(atol=1e-1, rtol=1e-1),
}


@dataclasses.dataclass(frozen=True)
class TensorComparison:
    """One tensor of the engine against onnxruntime's tensor of the same name."""
    name: str  # the tensor's name in the model
    shape: tuple[int, ...]
    max_abs_error: float  # over elements finite on both sides (inf: a non-finite value disagrees)
    max_rel_error: float  # |actual - expected| / |expected| over finite elements where expected != 0
    mean_abs_error: float
    cosine: float  # cosine similarity of the finite elements (1.0 when both are all zero)
    nan_mismatches: int  # positions where exactly one side is NaN
    mismatched: int  # elements past the tolerance (NaN mismatches included)
    size: int
    passed: bool
    layer: str = ""  # the engine step that computed it (layer-wise comparisons)
    kind: str = ""
    tactic: str = ""
    fused_from: tuple[str, ...] = ()  # the model's layers that step implements
    note: str = ""  # why it could not be compared (a shape that differs), when it could not

    @property
    def mismatched_fraction(self) -> float:
        return self.mismatched / self.size if self.size else 0.0


def compare_arrays(name: str, actual, expected, tolerance: Tolerance, **step) -> TensorComparison:
    """Compare `actual` (the engine's) with `expected` (the reference); `step` fills the layer fields."""
    actual, expected = _as_float64(actual), _as_float64(expected)
    if actual.shape != expected.shape:
        note = f"shape {tuple(actual.shape)} here, {tuple(expected.shape)} in onnxruntime"
        return TensorComparison(name, tuple(expected.shape), math.inf, math.inf, math.inf, 0.0, 0, expected.size,
                                expected.size, False, note=note, **step)
    actual_nan, expected_nan = np.isnan(actual), np.isnan(expected)
    finite = np.isfinite(actual) & np.isfinite(expected)
    same_non_finite = (actual_nan & expected_nan) | (~finite & ~actual_nan & ~expected_nan & (actual == expected))
    difference = np.abs(np.subtract(actual, expected, where=finite, out=np.zeros_like(actual)))  # no inf - inf
    within = (finite & (difference <= tolerance.atol + tolerance.rtol * np.abs(expected))) | same_non_finite
    non_finite_disagrees = bool((~finite & ~same_non_finite).any())
    nonzero = finite & (expected != 0)
    relative = difference[nonzero] / np.abs(expected[nonzero])
    mismatched = int(within.size - np.count_nonzero(within))
    return TensorComparison(
        name, tuple(expected.shape),
        max_abs_error=math.inf if non_finite_disagrees else float(difference.max(initial=0.0)),
        max_rel_error=math.inf if non_finite_disagrees else float(relative.max(initial=0.0)),
        mean_abs_error=float(difference[finite].mean()) if finite.any() else 0.0,
        cosine=_cosine(actual[finite], expected[finite]),
        nan_mismatches=int(np.count_nonzero(actual_nan != expected_nan)),
        mismatched=mismatched, size=int(within.size), passed=mismatched == 0, **step)


def _as_float64(value) -> np.ndarray:
    if not isinstance(value, np.ndarray):  # a torch tensor (bfloat16 widens exactly to float32 first)
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    if not math.isfinite(norms):  # finite values whose squares overflow float64: compare directions at unit scale
        a, b = a / np.abs(a).max(), b / np.abs(b).max()
        norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / norms)
