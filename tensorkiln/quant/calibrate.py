"""Calibration: per-tensor activation scales from batches of data (or from a calibration cache).

Every floating activation of the network (its inputs and each layer's outputs) gets a histogram of |x| over all
calibration batches; the calibrator's algorithm (algorithms.py) turns each histogram into a threshold amax, and
the scale is amax / 127 (symmetric INT8, TensorRT's convention). The scales are written to the calibrator's cache,
which a later build reads instead of calibrating again.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from ..errors import BuildError
from ..ir.graph import Network, Tensor
from ..progress import progress_bar
from .algorithms import compute_amax
from .cache import format_cache, parse_cache
from .calibrator import Int8Calibrator
from .histogram import AbsHistogram
from .observe import NetworkRunner

INT8_MAX = 127
# batches kept for the accuracy tools: one batch of one image says little about a detector's other images, and each
# kept batch costs one network run per quantized layer when sensitivity is measured
SENSITIVITY_BATCHES = 4
FEW_SAMPLES = 100  # below this many calibration samples, entropy calibration gets a warning


@dataclasses.dataclass(frozen=True)
class Calibration:
    algorithm: str
    scales: dict[str, float]  # tensor name -> scale (amax / 127)
    from_cache: bool
    batches: int  # calibration batches run (0 when the scales came from the cache)
    sample_batches: tuple[dict[str, np.ndarray], ...]  # the first few, for the accuracy tools (SQNR, sensitivity)


def calibrate(network: Network, calibrator: Int8Calibrator, say: Callable[[str], None] = lambda line: None,
              device: torch.device | str = "cpu") -> Calibration:
    cached = calibrator.read_calibration_cache()
    if cached is not None:
        algorithm, scales = parse_cache(cached)
        if algorithm == calibrator.algorithm:
            say(f"calibration cache: {len(scales)} tensor scales ({algorithm}), no calibration run")
            return Calibration(algorithm, scales, True, 0, ())
        say(f"calibration cache is from the {algorithm} calibrator, not {calibrator.algorithm}: calibrating again")
    histograms, batches, samples = _collect(network, calibrator, device)
    if batches == 0:
        raise BuildError("the calibrator gave no batch: INT8 calibration needs data (at least one batch of the "
                         "network's input shape) or a calibration cache")
    scales = {}
    for name, histogram in histograms.items():
        amax = compute_amax(calibrator.algorithm, histogram, calibrator.settings)
        if amax > 0.0:  # a tensor that is zero on all the data has no range to quantize
            scales[name] = float(np.float32(amax / INT8_MAX))
    calibrator.write_calibration_cache(format_cache(calibrator.algorithm, scales))
    say(f"calibrated {len(scales)} tensors on {batches} batches ({calibrator.algorithm})")
    seen = batches * (network.inputs[0].shape[0] if network.inputs and network.inputs[0].shape else 1)
    if calibrator.algorithm == "entropy" and seen < FEW_SAMPLES:
        # measured: UltraFace entropy-calibrated on 6 images clipped its ReLU outputs to 10-40% of their range and
        # found no face; minmax on the same 6 found all 52
        say(f"warning: entropy calibration on {seen} samples: its histograms are too sparse to place thresholds "
            f"well (TensorRT's guidance is about 500); with fewer than {FEW_SAMPLES}, minmax or percentile is safer")
    return Calibration(calibrator.algorithm, scales, False, batches, tuple(samples))


def _collect(network: Network, calibrator: Int8Calibrator, device: torch.device | str):
    histograms: dict[str, AbsHistogram] = {}

    def visit(tensor: Tensor, value: torch.Tensor) -> None:
        if value.is_floating_point() and value.numel():
            histograms.setdefault(tensor.name, AbsHistogram()).add(value)

    runner = NetworkRunner(network, device)
    specs = [(t.name, t.shape) for t in network.inputs]
    batches, samples = 0, []
    # a bar on stderr where the calibrator asks for one (kiln build does) and stderr is a terminal
    with progress_bar("calibrating", calibrator.max_batches, enabled=calibrator.progress) as advance:
        while (batch := calibrator.get_batch(specs)) is not None:
            runner.run(batch, visit, keep_all=False)
            if len(samples) < SENSITIVITY_BATCHES:
                samples.append(batch)
            batches += 1
            advance()
    return histograms, batches, samples
