"""A histogram of |x| over many batches, with a range that grows as larger values arrive.

TensorRT's calibrators see each tensor over every calibration batch; holding all the values is too much memory, so
each tensor keeps 2048 bins of its absolute values over [0, top). The first batch sets `top` to its largest value;
a later batch with a larger one doubles `top` as often as needed, and each doubling merges pairs of neighbouring
bins, so the old counts stay exact (only their resolution halves) and nothing is binned twice.

Exact zeros are counted apart (`zeros`): every scale represents them exactly, so they say nothing about where to
clip, and a ReLU's output is mostly zeros. Counted in bin 0 they swamp the entropy calibrator's first level and
drag its threshold far down (LeNet's ip1/relu1 with zeros binned: layer SQNR 3 dB, 99.0% top-1 instead of
99.76%). pytorch-quantization's histogram calibrator has the same choice (`skip_zeros`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

HISTOGRAM_BINS = 2048


class AbsHistogram:
    """Counts of |x| in HISTOGRAM_BINS equal bins over [0, top), plus the exact largest |x| seen."""

    def __init__(self, bins: int = HISTOGRAM_BINS):
        self.bins = bins
        self.counts = np.zeros(bins, np.float64)
        self.top = 0.0  # upper edge of the last bin; 0 until a non-zero value arrives
        self.max = 0.0  # the exact largest |x| (min-max calibration uses it)
        self.zeros = 0  # exact zeros seen (not in `counts`)

    @property
    def bin_width(self) -> float:
        return self.top / self.bins

    @property
    def total(self) -> float:
        """Every finite value seen, zeros included."""
        return float(self.counts.sum()) + self.zeros

    def add(self, values: torch.Tensor) -> None:
        magnitudes = values.detach().reshape(-1).abs().float()
        if magnitudes.numel() == 0:
            return
        largest = float(magnitudes.max())  # NaN where any value is NaN
        if not math.isfinite(largest):  # an Inf or NaN says nothing about the usual range
            magnitudes = magnitudes[torch.isfinite(magnitudes)]
            if magnitudes.numel() == 0:
                return
            largest = float(magnitudes.max())
        zeros = magnitudes.numel() - int(torch.count_nonzero(magnitudes))
        self.zeros += zeros
        if largest == 0.0:
            return
        self.max = max(self.max, largest)
        if self.top == 0.0:
            self.top = largest
        elif largest >= self.top:
            self._grow(largest)
        counts = torch.histc(magnitudes, bins=self.bins, min=0.0, max=self.top).double().cpu().numpy()
        counts[0] -= zeros  # histc puts the zeros in bin 0; they are counted apart
        self.counts += counts

    def _grow(self, largest: float) -> None:
        """Double `top` until it passes `largest`, merging neighbouring bins at each doubling."""
        factor = 2 ** max(1, math.ceil(math.log2(largest / self.top) + 1e-12))
        if largest >= self.top * factor:  # rounding in log2 (the largest value sits on the new edge)
            factor *= 2
        merged = np.zeros(self.bins, np.float64)
        if factor >= self.bins:
            merged[0] = self.counts.sum()
        else:
            merged[: self.bins // factor] = self.counts.reshape(-1, factor).sum(axis=1)
        self.counts = merged
        self.top *= factor
