"""Custom layers (plugins) and the fallback for ONNX operators without a converter."""
from __future__ import annotations

from typing import ClassVar

from ..dtypes import DataType
from .base import Ints, OpAttrs, op


# ---- custom layers and the fallback for ONNX operators without a converter -------------------------------
@op("plugin")
class Plugin(OpAttrs):
    """A custom layer (tensorkiln.plugins): `type` names the registered plugin class, `params_json` holds its
    parameters as canonical JSON. The engine stores only these two; the class is looked up when the engine
    is loaded, so an engine never carries code."""
    type: str
    params_json: str = "{}"
    data_dependent: bool = False  # some output size is known only at run time (DetectionOutput, Proposal)

    @property
    def DATA_DEPENDENT(self) -> bool:  # read by shape inference, as the ClassVar of other data-dependent kinds
        return self.data_dependent


@op("onnx_fallback")
class OnnxFallback(OpAttrs):
    """An ONNX node tensorkiln has no converter for, run by onnx's reference implementation (slow; only built
    with allow_fallback). `node` is the serialized NodeProto (base64): data, never code. Output shapes and
    dtypes were found at build time."""
    FALLBACK: ClassVar[bool] = True
    op_type: str
    node: str
    opset: int
    output_dtypes: tuple[DataType, ...]
    output_shapes: tuple[Ints, ...]
