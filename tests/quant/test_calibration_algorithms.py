"""Histograms of |x| and the four calibration algorithms, each against a direct (slow, independent) computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorkiln.quant.algorithms import CALIBRATION_ALGORITHMS, AlgorithmSettings, compute_amax
from tensorkiln.quant.histogram import AbsHistogram


def _reference_entropy_amax(counts: np.ndarray, width: float) -> float:
    """TensorRT's entropy calibration 2 written out loop by loop, as pytorch-quantization's _compute_amax_entropy
    does it (np.digitize over a linspace of 128 levels), with KL computed as scipy.stats.entropy would."""
    best, best_divergence = None, np.inf
    for i in range(128, len(counts) + 1):
        p = counts[:i].astype(np.float64).copy()
        p[i - 1] += counts[i:].sum()
        levels = np.digitize(np.arange(i), np.linspace(0, i, 129)) - 1
        levels[counts[:i] == 0] = -1
        q = np.zeros(i)
        for level in range(128):
            members = levels == level
            if members.any():
                q[members] = counts[:i][members].sum() / members.sum()
        p, q = p / p.sum(), q / q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            divergence = np.sum(np.where(p > 0, p * np.log(p / np.where(q > 0, q, 0)), 0.0))
        if divergence <= best_divergence:  # the last minimum
            best, best_divergence = i, divergence
    return best * width


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_matches_the_loop_reference(seed):
    rng = np.random.default_rng(seed)
    histogram = AbsHistogram(bins=512)  # fewer bins keep the loop reference fast; the algorithm is the same
    # a heavy-tailed activation: most values small, a few outliers (the case entropy calibration exists for)
    values = np.concatenate([rng.standard_normal(20000), rng.standard_normal(40) * 12]).astype(np.float32)
    histogram.add(torch.from_numpy(values))
    expected = _reference_entropy_amax(histogram.counts, histogram.bin_width)
    assert compute_amax("entropy", histogram) == pytest.approx(min(expected, histogram.max), rel=1e-12)
    assert compute_amax("entropy", histogram) < 0.9 * histogram.max  # the outliers are clipped


def test_minmax_percentile_and_mse_against_the_samples():
    rng = np.random.default_rng(3)
    values = (rng.standard_normal(200_000) * 2).astype(np.float32)
    histogram = AbsHistogram()
    for chunk in np.split(values, 4):
        histogram.add(torch.from_numpy(chunk))
    magnitudes = np.abs(values)
    assert compute_amax("minmax", histogram) == magnitudes.max()
    percentile = compute_amax("percentile", histogram, AlgorithmSettings(percentile=99.9))
    assert abs(percentile - np.quantile(magnitudes, 0.999)) <= histogram.bin_width
    # mse: the threshold's quantization error on the samples is the least of a grid of thresholds, to 1%
    def error(amax):
        step = amax / 127
        return float(np.mean((magnitudes - np.minimum(np.round(magnitudes / step), 127) * step) ** 2))

    best_on_grid = min(error(a) for a in np.linspace(0.2, 1.0, 200) * magnitudes.max())
    assert error(compute_amax("mse", histogram)) <= best_on_grid * 1.01


def test_growing_range_merges_bins_exactly():
    rng = np.random.default_rng(4)
    batches = [rng.uniform(-s, s, 5000).astype(np.float32) for s in (1.0, 3.0, 50.0, 2.0)]
    histogram = AbsHistogram(bins=256)
    for batch in batches:
        histogram.add(torch.from_numpy(batch))
    everything = np.abs(np.concatenate(batches))
    assert histogram.top >= everything.max() and histogram.max == everything.max()
    direct, _ = np.histogram(everything, bins=256, range=(0, histogram.top))
    assert np.abs(histogram.counts - direct).max() <= 2  # bin edges agree up to float rounding at the edges
    assert histogram.counts.sum() == everything.size


def test_zeros_counted_apart_and_nan_ignored():
    histogram = AbsHistogram()
    histogram.add(torch.tensor([0.0, 0.0, 0.0, float("nan"), float("inf"), 1.0, -2.0]))
    assert histogram.zeros == 3 and histogram.counts.sum() == 2 and histogram.max == 2.0
    empty = AbsHistogram()
    empty.add(torch.zeros(10))
    assert all(compute_amax(name, empty) == 0.0 for name in CALIBRATION_ALGORITHMS)


def test_relu_output_entropy_threshold_not_dragged_down_by_zeros():
    rng = np.random.default_rng(5)
    relu = np.maximum(rng.standard_normal(100_000), 0).astype(np.float32)
    histogram = AbsHistogram()
    histogram.add(torch.from_numpy(relu))
    assert compute_amax("entropy", histogram) > 2.5  # N(0, 1)'s positive half: a threshold near its tail


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match="unknown calibration algorithm 'kl'.*entropy"):
        compute_amax("kl", AbsHistogram())
