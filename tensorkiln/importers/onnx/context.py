"""ConversionContext: what a converter sees of the model while one node is converted."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import onnx

from ...errors import ModelFormatError, ShapeError
from ...ir.graph import Tensor
from ...network import NetworkDefinition
from .tensors import FP8_TYPES, tensor_to_array


class ConversionError(ModelFormatError):
    """A node could not be converted (an attribute or input the converter cannot honour)."""


class BuildTimeValueRequired(ConversionError):
    """An input that selects shapes (axes, pads, sizes, ...) is computed from run-time data.

    Like TensorRT's shape tensors, such values must be known when the engine is built; a graph input can be
    given a fixed value with `parse_onnx(..., input_values={name: array})`."""

    def __init__(self, message: str, tensor_name: str):
        super().__init__(message)
        self.tensor_name = tensor_name


class ConversionContext:
    def __init__(self, network: NetworkDefinition, opset: int):
        self.network = network
        self.opset = opset
        self.domain_versions: dict[str, int] = {}  # domain -> the opset version the model imports (set by the parser)
        self.tensors: dict[str, Tensor] = {}
        self.fp8_types: dict[str, int] = {}  # value name -> its FP8 element type, for FP8 values held as float32
        self.node: onnx.NodeProto | None = None
        self.in_subgraph = False
        # set by the parser: converts a subgraph inline and returns its output tensors
        self.convert_subgraph: Callable[[onnx.GraphProto], list[Tensor]] | None = None
        # set by the parser: the arrays of the main graph's initializers decoded by an earlier import of the same
        # model (an engine with profiles imports it once per shape), filled as they are decoded
        self.decoded_initializers: dict[str, np.ndarray] | None = None

    # ---- inputs ----------------------------------------------------------------------------------
    def input(self, node: onnx.NodeProto, index: int) -> Tensor | None:
        """The tensor of input `index`, or None where the optional input is absent."""
        if index >= len(node.input) or not node.input[index]:
            return None
        try:
            return self.tensors[node.input[index]]
        except KeyError:
            raise self.error(node, f"input {node.input[index]!r} is not produced by any earlier node") from None

    def inputs(self, node: onnx.NodeProto) -> list[Tensor]:
        return [t for t in (self.input(node, i) for i in range(len(node.input))) if t is not None]

    def constant(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The value of input `index` if it is known at build time (weights, folded shape arithmetic)."""
        tensor = self.input(node, index)
        return None if tensor is None else tensor.value

    def require_constant(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or not node.input[index]:
            raise self.error(node, f"its {what} (input {index}) is missing; the model is malformed")
        value = self.constant(node, index)
        if value is None:
            message = self.error(node, f"its {what} (input {index}, {node.input[index]!r}) must be known at build "
                                       "time, but it is computed from run-time data; fix the input shapes so it can "
                                       "be folded, or give the input a fixed value (input_values=...)")
            raise BuildTimeValueRequired(str(message), node.input[index])
        return value

    def ints(self, node: onnx.NodeProto, index: int, what: str) -> list[int]:
        values = np.asarray(self.require_constant(node, index, what)).reshape(-1)
        if values.dtype.kind not in "iub" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise self.error(node, f"its {what} (input {index}, {node.input[index]!r}) must hold integers; it holds "
                                   f"{values[:8].tolist()}{' ...' if values.size > 8 else ''}")
        return [int(v) for v in values]

    def required_attr(self, node: onnx.NodeProto, name: str) -> Any:
        """An attribute the converter cannot do without (where the spec of an older opset left it optional)."""
        value = self.attr(node, name)
        if value is None:
            raise self.error(node, f"has no {name!r} attribute, which tensorkiln needs to convert it")
        return value

    def fp8_type(self, node: onnx.NodeProto, index: int) -> int | None:
        """The FP8 element type (onnx.TensorProto.FLOAT8E4M3FN, ...) of input `index` where the model stores it in
        FP8 (tensorkiln holds it as float32), else None."""
        if index >= len(node.input):
            return None
        return self.fp8_types.get(node.input[index])

    # ---- constants -----------------------------------------------------------------------------------
    def add_initializer(self, initializer: onnx.TensorProto, claim: bool) -> Tensor:
        """A constant for an initializer (checked as tensors.tensor_to_array checks it). With `claim` it takes the
        initializer's name (reserved for it); in a subgraph, whose names may repeat, a name made from it."""
        cache = None if self.in_subgraph else self.decoded_initializers
        array = None if cache is None else cache.get(initializer.name)
        if array is None:
            array = tensor_to_array(initializer, f"initializer {initializer.name!r}")
            if cache is not None:
                array.flags.writeable = False  # shared by every network imported from the model: never written
                cache[initializer.name] = array
        if initializer.data_type in FP8_TYPES:
            self.fp8_types[initializer.name] = initializer.data_type
        tensor = self.add_constant_value(array, initializer.name, claim)
        self.tensors[initializer.name] = tensor
        return tensor

    def add_constant_value(self, array: np.ndarray, name: str, claim: bool) -> Tensor:
        tensor = self.network.add_constant(None, array, name=name).get_output(0)
        if claim:
            self.network.ir.rename(tensor, name)
        return tensor

    # ---- attributes --------------------------------------------------------------------------------
    def attr(self, node: onnx.NodeProto, name: str, default: Any = None) -> Any:
        for attribute in node.attribute:
            if attribute.name == name:
                value = onnx.helper.get_attribute_value(attribute)
                if isinstance(value, bytes):
                    return self._text(node, name, value)
                if isinstance(value, onnx.TensorProto):
                    return tensor_to_array(value, f"attribute {name!r} of ONNX node {self.name(node)!r}")
                if isinstance(value, list):
                    return [self._text(node, name, v) if isinstance(v, bytes) else v for v in value]
                return value
        return default

    def choice(self, node: onnx.NodeProto, name: str, default: Any, allowed: Mapping[str, Any]) -> Any:
        """allowed[value] of a string attribute that names one of a few modes (Pad's mode, Resize's mode): a value
        the spec does not name is the model's error, one line, not a KeyError in the converter."""
        value = self.attr(node, name, default)
        if not isinstance(value, str) or value not in allowed:
            raise self.error(node, f"attribute {name!r} = {value!r} is not one of {', '.join(map(repr, allowed))}")
        return allowed[value]

    # ---- outputs and errors --------------------------------------------------------------------------
    def name(self, node: onnx.NodeProto) -> str:
        return node.name or f"{node.op_type}:{node.output[0] if node.output else '?'}"

    def _text(self, node: onnx.NodeProto, name: str, value: bytes) -> str:
        try:
            return value.decode()
        except UnicodeDecodeError:  # protobuf strings are UTF-8; bytes that are not come from a damaged file
            raise self.error(node, f"attribute {name!r} holds bytes that are not UTF-8 text ({value[:20]!r}); the "
                                   "model is damaged: re-export it") from None

    def error(self, node: onnx.NodeProto, message: str) -> ConversionError:
        return ConversionError(f"ONNX node {self.name(node)!r} ({node.op_type}, opset {self.opset}): {message}")

    def shape_error(self, node: onnx.NodeProto, message: str) -> ShapeError:
        return ShapeError(f"ONNX node {self.name(node)!r} ({node.op_type}, opset {self.opset}): {message}")
