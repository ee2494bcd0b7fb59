"""The calibrator API, in the spirit of TensorRT's IInt8Calibrator: an object that hands the builder batches and
reads and writes the calibration cache.

Subclass `Int8Calibrator` (get_batch, read_calibration_cache, write_calibration_cache), or use `DataCalibrator`,
which takes any source of samples (sources.py: a folder of images, .npy/.npz files, any iterable) and a cache path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import BuildError
from .algorithms import CALIBRATION_ALGORITHMS, AlgorithmSettings
from .sources import Sample

InputSpec = tuple[str, tuple[int, ...]]  # an input's name and its shape (dim 0 the batch)


class Int8Calibrator:
    """What the builder asks of a calibrator. The default reads no cache and has no data."""
    algorithm: str = "entropy"  # a name in algorithms.CALIBRATION_ALGORITHMS
    settings: AlgorithmSettings = AlgorithmSettings()
    max_batches: int | None = None  # how many batches get_batch gives at most (for the progress bar)
    progress: bool = False  # show a progress bar while calibrating

    def get_batch(self, inputs: Sequence[InputSpec]) -> dict[str, np.ndarray] | None:
        """The next batch, {input name: array of the input's shape}, or None when there is no more data."""
        return None

    def read_calibration_cache(self) -> str | None:
        """A cache written before (cache.py's text), or None to calibrate on data."""
        return None

    def write_calibration_cache(self, cache: str) -> None:
        """Keep `cache` for the next build."""


class DataCalibrator(Int8Calibrator):
    """Batches cut from `data` (samples or batches: arrays for a one-input network, or {input name: array}) to the
    network's input shapes; the cache at `cache_path` is read when it exists and written after calibrating."""

    def __init__(self, data: Iterable[Sample] | None = None, algorithm: str = "entropy",
                 max_batches: int | None = None, cache_path: Path | str | None = None,
                 settings: AlgorithmSettings = AlgorithmSettings(), progress: bool = False):
        if algorithm not in CALIBRATION_ALGORITHMS:
            raise BuildError(f"unknown calibrator {algorithm!r}; the calibrators are "
                             f"{', '.join(CALIBRATION_ALGORITHMS)}")
        if max_batches is not None and max_batches < 1:
            raise BuildError(f"calibration batches must be at least 1, not {max_batches}")
        self.data, self.algorithm, self.max_batches = data, algorithm, max_batches
        self.cache_path = None if cache_path is None else Path(cache_path)
        self.settings, self.progress = settings, progress
        self._batches: Iterator[dict[str, np.ndarray]] | None = None
        self._given = 0

    def get_batch(self, inputs: Sequence[InputSpec]) -> dict[str, np.ndarray] | None:
        if self.data is None:
            raise BuildError("INT8 calibration needs data or a calibration cache: give --calib DIR|FILE (or "
                             "DataCalibrator(data=...)), or --calib-cache of an earlier build")
        if self._batches is None:
            self._batches = rebatch(self.data, inputs)
        if self.max_batches is not None and self._given >= self.max_batches:
            return None
        batch = next(self._batches, None)
        self._given += batch is not None
        return batch

    def read_calibration_cache(self) -> str | None:
        if self.cache_path is not None and self.cache_path.is_file():
            return self.cache_path.read_text()
        return None

    def write_calibration_cache(self, cache: str) -> None:
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.cache_path.write_text(cache)


def rebatch(data: Iterable[Sample], inputs: Sequence[InputSpec]) -> Iterator[dict[str, np.ndarray]]:
    """Samples or batches of any size -> batches of exactly the inputs' batch size (dim 0); a remainder smaller
    than a batch is dropped (a partial batch would need other shapes)."""
    buffers: dict[str, list[np.ndarray]] = {name: [] for name, _ in inputs}
    held = dict.fromkeys(buffers, 0)
    for sample in data:
        arrays = _as_mapping(sample, inputs)
        for name, shape in inputs:
            array = np.asarray(arrays[name])
            if array.ndim == len(shape) - 1:  # one sample without its batch dim
                array = array[None]
            if array.shape[1:] != tuple(shape[1:]):
                raise BuildError(f"calibration data for input {name!r} has shape {array.shape}, but the network "
                                 f"takes {tuple(shape)} (any number of samples, each {tuple(shape[1:])}); "
                                 "preprocess the data to that shape, or build for the data's shape with --shapes")
            buffers[name].append(array)
            held[name] += len(array)
        while all(held[name] >= shape[0] for name, shape in inputs):
            batch = {}
            for name, shape in inputs:
                joined = np.concatenate(buffers[name]) if len(buffers[name]) > 1 else buffers[name][0]
                batch[name], rest = joined[: shape[0]], joined[shape[0]:]
                buffers[name], held[name] = ([rest] if len(rest) else []), len(rest)
            yield batch


def _as_mapping(sample: Sample, inputs: Sequence[InputSpec]) -> Mapping[str, np.ndarray]:
    names = [name for name, _ in inputs]
    if isinstance(sample, Mapping):
        missing = [name for name in names if name not in sample]
        if missing:
            raise BuildError(f"calibration data lacks inputs {missing} (it has {sorted(sample)}); give an array "
                             "for every network input, by name")
        return sample
    if len(names) != 1:
        raise BuildError(f"the network has {len(names)} inputs ({', '.join(names)}): give calibration samples as "
                         "{input name: array} mappings (or an .npz file with one array per input)")
    return {names[0]: sample}
