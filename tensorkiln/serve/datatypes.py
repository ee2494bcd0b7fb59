"""The protocol's datatype names (KServe v2 / Triton) and the engine's DataType."""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import DataType
from .errors import InvalidRequest

TO_WIRE = {DataType.FLOAT: "FP32", DataType.HALF: "FP16", DataType.DOUBLE: "FP64", DataType.INT8: "INT8",
           DataType.UINT8: "UINT8", DataType.INT16: "INT16", DataType.INT32: "INT32", DataType.INT64: "INT64",
           DataType.BOOL: "BOOL", DataType.BF16: "BF16"}
FROM_WIRE = {wire: dtype for dtype, wire in TO_WIRE.items()}
# model_config.proto's DataType enum names are "TYPE_" + the wire name (TYPE_FP32), except TYPE_STRING
CONFIG_PREFIX = "TYPE_"


def numpy_dtype(wire: str) -> np.dtype:
    """The numpy dtype of wire datatype `wire` (BF16 has none: refused)."""
    dtype = FROM_WIRE.get(wire)
    if dtype is None or dtype is DataType.BF16:
        raise InvalidRequest(f"datatype {wire!r} is not served; use one of "
                             f"{', '.join(sorted(w for w in FROM_WIRE if w != 'BF16'))}")
    return dtype.numpy


def wire_bytes(value: np.ndarray) -> memoryview:
    """The bytes of `value` in C order, as they go on the wire: a view where it is contiguous, else one copy (an
    empty tensor too: memoryview cannot cast a shape with a zero)."""
    return memoryview(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
