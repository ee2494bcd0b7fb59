"""The calibration cache: TensorRT's text layout, so that a later build reuses the scales without data.

    TRT-8601-EntropyCalibration2
    data: 3c010204
    conv1: 3d2a8f1c

The first line names the calibrator (after TensorRT's "TRT-<version>-" prefix); each other line is a tensor name,
": ", and the tensor's scale (amax / 127) as the hex of its float32 bits, as TensorRT writes them.
"""
from __future__ import annotations

import re
import struct

from ..errors import BuildError

CACHE_VERSION_PREFIX = "TRT-8601-"
# calibration algorithm -> the calibrator's name in the header (TensorRT's names where TensorRT has one)
HEADER_NAMES = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration",
                "percentile": "PercentileCalibration", "mse": "MSECalibration"}
_HEADER = re.compile(r"TRT-\d+-(\w+)$")


def float_to_hex(value: float) -> str:
    return format(struct.unpack(">I", struct.pack(">f", value))[0], "08x")


def hex_to_float(text: str) -> float:
    return struct.unpack(">f", struct.pack(">I", int(text, 16)))[0]


def format_cache(algorithm: str, scales: dict[str, float]) -> str:
    lines = [CACHE_VERSION_PREFIX + HEADER_NAMES[algorithm]]
    lines += [f"{name}: {float_to_hex(scale)}" for name, scale in scales.items()]
    return "\n".join(lines) + "\n"


def parse_cache(text: str, where: str = "calibration cache") -> tuple[str, dict[str, float]]:
    """(algorithm, {tensor name: scale}) from a cache's text; an unreadable line is a BuildError naming it."""
    lines = text.splitlines()
    header = _HEADER.match(lines[0].strip()) if lines else None
    algorithms = {name: algorithm for algorithm, name in HEADER_NAMES.items()}
    if header is None or header.group(1) not in algorithms:
        raise BuildError(f"{where}: the first line should name the calibrator, e.g. "
                         f"{CACHE_VERSION_PREFIX}{HEADER_NAMES['entropy']}; delete the file to calibrate again")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(": ")
        try:
            scale = hex_to_float(value.strip()) if sep and name else None
        except (ValueError, struct.error):
            scale = None
        if scale is None or not scale >= 0.0 or scale == float("inf"):
            raise BuildError(f"{where}, line {number}: {line.strip()[:80]!r} is not 'tensor: <hex of a float32 "
                             "scale>'; delete the file to calibrate again")
        scales[name] = scale
    return algorithms[header.group(1)], scales
