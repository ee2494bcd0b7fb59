"""tensorkiln: a deep-learning inference optimizer and runtime.

    network = tensorkiln.parse_onnx("model.onnx")
    engine = tensorkiln.Builder().build(network)
    outputs = engine.create_execution_context().execute({"input": array})

Heavy pieces are imported on first use so that `import tensorkiln` stays fast.
"""
from __future__ import annotations

import importlib

from .cpu_threads import request_passive_waiting

request_passive_waiting()  # before anything imports torch: idle CPU threads sleep (see cpu_threads.py)

__version__ = "0.1.0"

_LAZY = {
    "Builder": "tensorkiln.builder", "BuilderConfig": "tensorkiln.builder", "Target": "tensorkiln.builder",
    "NetworkDefinition": "tensorkiln.network", "DataType": "tensorkiln.ir.dtypes",
    "Runtime": "tensorkiln.runtime", "Engine": "tensorkiln.runtime", "ExecutionContext": "tensorkiln.runtime",
    "parse_onnx": "tensorkiln.importers.onnx", "parse_tflite": "tensorkiln.importers.tflite",
    "parse_tensorflow": "tensorkiln.importers.tensorflow", "ActivationType": "tensorkiln.ir.ops",
    "ElementWiseOperation": "tensorkiln.ir.ops", "PoolingType": "tensorkiln.ir.ops",
    "ReduceOperation": "tensorkiln.ir.ops", "ScaleMode": "tensorkiln.ir.ops", "UnaryOperation": "tensorkiln.ir.ops",
    "PaddingMode": "tensorkiln.ir.ops", "TensorkilnError": "tensorkiln.errors",
    "Precision": "tensorkiln.quant.precision",
    "ResourceLimits": "tensorkiln.limits", "ResourceLimitError": "tensorkiln.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tensorkiln' has no attribute {name!r}")
