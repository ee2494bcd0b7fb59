"""ONNX converters, one module per op family (importing them registers them)."""
from . import activation, constants, conv, linalg, math, normalization, pooling, reduce, resize, tensor  # noqa: F401
