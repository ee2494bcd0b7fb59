"""Calibrators for refit: one that records the calibration cache a build reads or writes (the engine keeps it), and
one that gives that recorded cache back, so that a refit quantizes its new weights at the activation scales the
engine was calibrated to (TensorRT's refit keeps the dynamic ranges too) without calibration data."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .cache import parse_cache
from .calibrator import InputSpec, Int8Calibrator


class RecordingCalibrator(Int8Calibrator):
    """`inner` as it is, keeping the last cache text it read or wrote (the scales the build quantized with)."""

    def __init__(self, inner: Int8Calibrator):
        self.inner, self.cache = inner, None
        self.algorithm, self.settings = inner.algorithm, inner.settings
        self.max_batches, self.progress = inner.max_batches, inner.progress

    def get_batch(self, inputs: Sequence[InputSpec]) -> dict[str, np.ndarray] | None:
        return self.inner.get_batch(inputs)

    def read_calibration_cache(self) -> str | None:
        text = self.inner.read_calibration_cache()
        if text is not None:  # used only where its algorithm matches; otherwise the write below replaces it
            self.cache = text
        return text

    def write_calibration_cache(self, cache: str) -> None:
        self.cache = cache
        self.inner.write_calibration_cache(cache)


class RecordedCacheCalibrator(Int8Calibrator):
    """The calibration cache an engine recorded, and no data."""

    def __init__(self, cache: str, where: str = "the engine's recorded calibration cache"):
        self.algorithm, _ = parse_cache(cache, where)  # a BuildError naming the line where it is unreadable
        self.cache = cache

    def read_calibration_cache(self) -> str | None:
        return self.cache
