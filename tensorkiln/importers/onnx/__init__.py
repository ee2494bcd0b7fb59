"""ONNX importer: `parse_onnx(model, input_shapes=...)` -> NetworkDefinition."""
from .parser import OnnxParser, load_model, parse_onnx
from .registry import supported_ops

__all__ = ["OnnxParser", "load_model", "parse_onnx", "supported_ops"]
