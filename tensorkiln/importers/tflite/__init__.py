"""TFLite importer: `parse_tflite(model.tflite)` -> NetworkDefinition, reading the flatbuffer natively."""
from .parser import TFLiteParser, parse_tflite
from .registry import supported_ops

__all__ = ["TFLiteParser", "parse_tflite", "supported_ops"]
