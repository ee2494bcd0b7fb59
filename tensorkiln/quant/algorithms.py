"""Calibration algorithms: from a tensor's histogram of |x|, the clipping threshold `amax` (scale = amax / 127).

Each is registered by name with `@calibration_algorithm`; `CALIBRATION_ALGORITHMS` maps the names the CLI takes
(entropy, minmax, percentile, mse) to functions `(histogram, settings) -> amax`.

- entropy: TensorRT's entropy calibration 2 (Migacz, "8-bit Inference with TensorRT", GTC 2017): for every
  candidate number of kept bins i in 128..2048, P is the histogram clipped at bin i (the clipped mass added to its
  last bin), Q is the first i bins merged into 128 levels and expanded back over the non-empty bins; the threshold
  is the edge of the i whose KL(P || Q) is least (the last one on a tie, as pytorch-quantization picks it).
- minmax: the largest |x| seen.
- percentile: the |x| below which `percentile` % of the values lie (99.99 by default).
- mse: the threshold whose 8-bit symmetric quantization of the histogram has the least mean squared error.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .histogram import AbsHistogram

INT8_LEVELS = 128  # quantized bins of |x|: 0..127
_CANDIDATE_CHUNK = 256  # candidates scored at once (bounds the [candidates, bins] matrices to a few MiB)


@dataclasses.dataclass(frozen=True)
class AlgorithmSettings:
    percentile: float = 99.99  # percentile calibration: the share of |x| kept unclipped, in percent


AmaxFn = Callable[[AbsHistogram, AlgorithmSettings], float]
CALIBRATION_ALGORITHMS: dict[str, AmaxFn] = {}


def calibration_algorithm(name: str):
    def register(fn: AmaxFn) -> AmaxFn:
        if name in CALIBRATION_ALGORITHMS:
            raise ValueError(f"calibration algorithm {name!r} is registered twice")
        CALIBRATION_ALGORITHMS[name] = fn
        return fn

    return register


def compute_amax(algorithm: str, histogram: AbsHistogram, settings: AlgorithmSettings = AlgorithmSettings()) -> float:
    if algorithm not in CALIBRATION_ALGORITHMS:
        raise ValueError(f"unknown calibration algorithm {algorithm!r}; the algorithms are "
                         f"{', '.join(CALIBRATION_ALGORITHMS)}")
    if histogram.max == 0.0:
        return 0.0
    return min(float(CALIBRATION_ALGORITHMS[algorithm](histogram, settings)), histogram.max)


@calibration_algorithm("minmax")
def minmax_amax(histogram: AbsHistogram, settings: AlgorithmSettings) -> float:
    return histogram.max


@calibration_algorithm("percentile")
def percentile_amax(histogram: AbsHistogram, settings: AlgorithmSettings) -> float:
    cumulative = np.cumsum(histogram.counts)
    cumulative[0] += histogram.zeros
    index = int(np.searchsorted(cumulative, cumulative[-1] * settings.percentile / 100.0))
    return (min(index, histogram.bins - 1) + 1) * histogram.bin_width  # the upper edge of the bin reaching it


@calibration_algorithm("entropy")
def entropy_amax(histogram: AbsHistogram, settings: AlgorithmSettings) -> float:
    counts = histogram.counts  # exact zeros left out (histogram.py says why)
    bins = len(counts)
    if bins <= INT8_LEVELS:
        return histogram.max
    candidates = np.arange(INT8_LEVELS, bins + 1)
    divergences = np.concatenate([_kl_divergences(counts, candidates[start: start + _CANDIDATE_CHUNK])
                                  for start in range(0, len(candidates), _CANDIDATE_CHUNK)])
    best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))  # the last minimum
    return int(candidates[best]) * histogram.bin_width


def _kl_divergences(counts: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """KL(P_i || Q_i) for each number of kept bins i in `kept` (see the module docstring)."""
    bins = len(counts)
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    nonzero = np.concatenate([[0], np.cumsum(counts > 0)])
    index = np.arange(bins)[None, :]
    i = kept[:, None]
    inside = index < i
    # bin b of the first i is in level g = floor(b * 128 / i), whose bins are [ceil(g i / 128), ceil((g+1) i / 128))
    level = np.where(inside, index * INT8_LEVELS // i, 0)
    start = (level * i + INT8_LEVELS - 1) // INT8_LEVELS
    end = np.minimum(((level + 1) * i + INT8_LEVELS - 1) // INT8_LEVELS, i)
    level_sum = cumulative[end] - cumulative[start]
    level_nonzero = nonzero[end] - nonzero[start]
    q = np.where(inside & (counts[None, :] > 0), level_sum / np.maximum(level_nonzero, 1), 0.0)
    p = np.where(inside, counts[None, :], 0.0)
    p[np.arange(len(kept)), kept - 1] += cumulative[-1] - cumulative[kept]  # the clipped values land in the last bin
    p /= p.sum(axis=1, keepdims=True)
    q_total = q.sum(axis=1, keepdims=True)
    q = q / np.where(q_total > 0, q_total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)  # Q = 0 where P > 0: an infinite divergence
    return terms.sum(axis=1)


@calibration_algorithm("mse")
def mse_amax(histogram: AbsHistogram, settings: AlgorithmSettings) -> float:
    counts = histogram.counts  # exact zeros have no error at any threshold
    width = histogram.bin_width
    centers = (np.arange(len(counts)) + 0.5) * width
    thresholds = np.arange(INT8_LEVELS, len(counts) + 1) * width
    errors = np.empty(len(thresholds))
    for start in range(0, len(thresholds), _CANDIDATE_CHUNK):
        amax = thresholds[start: start + _CANDIDATE_CHUNK, None]
        step = amax / (INT8_LEVELS - 1)
        quantized = np.minimum(np.round(centers[None, :] / step), INT8_LEVELS - 1) * step
        errors[start: start + _CANDIDATE_CHUNK] = ((centers[None, :] - quantized) ** 2 * counts[None, :]).sum(axis=1)
    return float(thresholds[int(np.argmin(errors))])
