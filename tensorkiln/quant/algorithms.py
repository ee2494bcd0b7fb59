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
_CANDIDATE_CHUNK = 256  # MSE candidates scored at once (bounds the [candidates, bins] matrices to a few MiB)


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
    if len(counts) <= INT8_LEVELS or counts.sum() == 0:
        return histogram.max
    kept = np.arange(INT8_LEVELS, len(counts) + 1)
    divergences = _kl_divergences(counts, kept)
    best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))  # the last minimum
    return int(kept[best]) * histogram.bin_width


def _kl_divergences(counts: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """KL(P_i || Q_i) for each number of kept bins i in `kept` (see the module docstring), in O(128) per candidate.

    With c the counts, T their total, C_i the sum of the first i, S_g and N_g the sum and the number of non-empty
    bins of level g: Q's non-empty bins b hold (S_g / N_g) / C_i, and P's bins below i - 1 hold c_b / T, so their
    part of the divergence is (1/T) sum c_b (log c_b - log T - log(S_g / N_g) + log C_i): prefix sums of c log c
    and 128 level terms S_g log(S_g / N_g). The last kept bin, which also holds the clipped mass, is added apart.
    """
    counts = counts.astype(np.float64)
    total = counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        c_log_c = np.where(counts > 0, counts * np.log(counts), 0.0)
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    cumulative_c_log_c = np.concatenate([[0.0], np.cumsum(c_log_c)])
    nonzero = np.concatenate([[0], np.cumsum(counts > 0)])
    i = kept[:, None]
    level = np.arange(INT8_LEVELS)[None, :]
    # level g of the first i bins is [ceil(g i / 128), ceil((g + 1) i / 128)): bin b is in level floor(b * 128 / i)
    start = (level * i + INT8_LEVELS - 1) // INT8_LEVELS
    end = ((level + 1) * i + INT8_LEVELS - 1) // INT8_LEVELS
    level_sum = cumulative[end] - cumulative[start]
    level_nonzero = nonzero[end] - nonzero[start]
    with np.errstate(divide="ignore", invalid="ignore"):
        level_log_mean = np.where(level_sum > 0, np.log(level_sum / np.maximum(level_nonzero, 1)), 0.0)
        level_terms = (level_sum * level_log_mean).sum(axis=1)
        kept_sum = cumulative[kept]
        last = counts[kept - 1]
        last_log_mean = level_log_mean[:, -1]  # the last kept bin is in the last level
        before_last = cumulative[kept - 1]
        body = (cumulative_c_log_c[kept - 1] - before_last * np.log(total) - (level_terms - last * last_log_mean)
                + before_last * np.log(kept_sum)) / total
        p_last = (last + total - kept_sum) / total
        q_last = np.exp(last_log_mean) / kept_sum
        tail = np.where(p_last > 0, np.where(last > 0, p_last * np.log(p_last / q_last), np.inf), 0.0)
    return body + tail


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
