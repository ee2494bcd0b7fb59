"""Data types of tensors, with conversions to numpy, torch and ONNX type codes."""
from __future__ import annotations

import enum

import numpy as np
import torch


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    BF16 = "bfloat16"
    DOUBLE = "float64"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"

    @property
    def torch(self) -> torch.dtype:
        return _TO_TORCH[self]

    @property
    def numpy(self) -> np.dtype:
        if self is DataType.BF16:
            raise TypeError("numpy has no bfloat16; use torch tensors for bfloat16 data")
        return np.dtype(self.value)

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.torch).element_size()

    @property
    def is_floating(self) -> bool:
        return self in (DataType.FLOAT, DataType.HALF, DataType.BF16, DataType.DOUBLE)

    @classmethod
    def from_torch(cls, dtype: torch.dtype) -> "DataType":
        try:
            return _FROM_TORCH[dtype]
        except KeyError:
            raise TypeError(f"torch dtype {dtype} is not supported by tensorkiln") from None

    @classmethod
    def from_numpy(cls, dtype) -> "DataType":
        name = np.dtype(dtype).name
        try:
            return cls(name)
        except ValueError:
            raise TypeError(f"numpy dtype {name} is not supported by tensorkiln") from None


_TO_TORCH = {
    DataType.FLOAT: torch.float32, DataType.HALF: torch.float16, DataType.BF16: torch.bfloat16,
    DataType.DOUBLE: torch.float64, DataType.INT8: torch.int8, DataType.UINT8: torch.uint8,
    DataType.INT16: torch.int16, DataType.INT32: torch.int32, DataType.INT64: torch.int64,
    DataType.BOOL: torch.bool,
}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}
