"""TFLite flatbuffer -> NetworkDefinition.

The network keeps the model's own layout (NHWC) at its inputs and outputs and in every tensor; the converters of
layout-bound ops (convolution, pooling, ...) transpose to NCHW and back at their edges, and the builder's
shuffle merging removes the back-to-back transposes this leaves between two such ops.

Quantized models: tensorkiln computes in float. Quantized weights are dequantized at import; every quantized
activation is written as QuantizeLinear -> DequantizeLinear with the model's scale and zero point (the values
TFLite's integer kernels produce, on the same grid), so the IR keeps the scales for an INT8 path to use; a
quantized network input is taken as TFLite takes it (int8/uint8) and dequantized, and a quantized output is
quantized back to the model's integer type."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from ...ir import ops
from ...ir.dtypes import DataType
from ...ir.graph import Tensor
from ...network import NetworkDefinition
from .context import TFLiteContext
from .model import ModelSource, OperatorRecord, SubgraphRecord, TensorRecord, TFLiteModel, load_tflite
from .registry import find_converter

log = logging.getLogger("tensorkiln.importers.tflite")

# ops whose output is, by definition, the float value of a quantized tensor: no fake quantization after them
_DEQUANTIZING_OPS = {"DEQUANTIZE"}


def unsupported_operators(subgraph: SubgraphRecord) -> list[OperatorRecord]:
    """Every operator that has neither a converter nor a plugin of its type name."""
    from ...plugins.registry import find_plugin

    return [op for op in subgraph.operators
            if (op.op_name == "CUSTOM" or find_converter(op.op_name) is None) and find_plugin(op.type_name) is None]


class TFLiteParser:
    def __init__(self, input_shapes: Mapping[str, Sequence[int]] | None = None):
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}

    def parse(self, source: ModelSource, name: str | None = None) -> NetworkDefinition:
        model = load_tflite(source)
        graph = model.subgraphs[0]  # the main subgraph; the others are bodies of control flow (not supported)
        self._check_supported(graph)
        default_name = Path(source).stem if not isinstance(source, bytes) else "tflite_model"
        network = NetworkDefinition(name or default_name)
        ctx = TFLiteContext(network, graph)
        io_names = {index: _io_name(model, graph, index) for index in (*graph.inputs, *graph.outputs)}
        network.ir.reserve_names(set(io_names.values()))
        unknown = sorted(set(self.input_shapes) - {io_names[i] for i in graph.inputs})
        if unknown:
            raise ShapeError(f"shapes were given for {unknown}, which are not inputs of the model; its inputs are "
                             f"{[io_names[i] for i in graph.inputs]}")
        for index in graph.inputs:
            ctx.tensors[index] = self._add_input(network, graph.tensors[index], io_names[index])
        for op in graph.operators:
            self._convert(ctx, op)
        for index in graph.outputs:
            network.mark_output(self._add_output(ctx, graph.tensors[index], io_names[index]))
        return network

    @staticmethod
    def _check_supported(graph: SubgraphRecord) -> None:
        missing = unsupported_operators(graph)
        if missing:
            listing = "; ".join(f"{op.type_name}{' (custom)' if op.op_name == 'CUSTOM' else ''} at operator "
                                f"{op.index} of subgraph {op.subgraph}" for op in missing)
            kinds = sorted({op.type_name for op in missing})
            raise UnsupportedOpError(f"{len(missing)} operator(s) of the TFLite model use operators tensorkiln does "
                                     f"not support: {listing}. Unsupported operator types: {kinds}. Register a "
                                     "plugin under the operator's name (tensorkiln.plugins.register_plugin; a custom "
                                     "op's flexbuffer options become its parameters), or replace them in the model.")

    def _add_input(self, network: NetworkDefinition, record: TensorRecord, name: str) -> Tensor:
        shape = self.input_shapes.get(name, record.shape)
        if len(shape) != len(record.shape):
            raise ShapeError(f"input {name!r} has rank {len(record.shape)}, but the shape given for it, {shape}, has "
                             f"rank {len(shape)}")
        tensor = network.add_input(name, DataType.from_numpy(record.dtype), shape)
        if record.is_quantized:  # fed as TFLite takes it; computed on in float
            return _dequantize(network, tensor, record)
        return tensor

    @staticmethod
    def _add_output(ctx: TFLiteContext, record: TensorRecord, name: str) -> Tensor:
        tensor = ctx.tensors.get(record.index)
        if tensor is None:
            raise ShapeError(f"graph output {name!r} is not produced by any operator (the model is malformed)")
        net = ctx.network
        if record.is_quantized and tensor.dtype.is_floating:  # returned as TFLite returns it: quantized
            scale, zero_point = _quantization_constants(net, record)
            op = ops.QuantizeLinear(record.quantization.axis, DataType.from_numpy(record.dtype))
            return net.add_layer(op, [tensor, scale, zero_point], name=f"output:{name}",
                                 output_names=[name]).get_output(0)
        return net.add_layer(ops.Identity(), [tensor], name=f"output:{name}", output_names=[name]).get_output(0)

    def _convert(self, ctx: TFLiteContext, op: OperatorRecord) -> None:
        ctx.op = op
        fn = None if op.op_name == "CUSTOM" else find_converter(op.op_name)
        outputs = (fn or _convert_plugin)(ctx, op)
        if len(outputs) < len(op.outputs):
            raise ctx.error(f"the converter made {len(outputs)} output(s); the operator has {len(op.outputs)}")
        for position, index in enumerate(op.outputs):
            if index < 0:
                continue
            tensor, record = outputs[position], ctx.record(index)
            if not self.input_shapes and not record.agrees_with(tensor.shape):
                raise ctx.error(f"output {position} ({record.name!r}) has shape {tuple(tensor.shape)} in tensorkiln "
                                f"but {tuple(record.shape)} in the model")
            if record.is_quantized and tensor.dtype.is_floating and op.op_name not in _DEQUANTIZING_OPS:
                tensor = _fake_quantize(ctx.network, tensor, record)  # onto the grid TFLite's kernels write
            ctx.tensors[index] = tensor


def _io_name(model: TFLiteModel, graph: SubgraphRecord, index: int) -> str:
    return model.signature_names.get(index) or graph.tensors[index].name


def _quantization_constants(network: NetworkDefinition, record: TensorRecord) -> tuple[Tensor, Tensor]:
    q = record.quantization
    shaped = (lambda a: a) if q.per_channel else (lambda a: a.reshape(()))
    scale = network.add_constant(None, shaped(q.scale.astype(np.float32)), name=f"{record.name}:scale")
    zero_point = network.add_constant(None, shaped(q.zero_point.astype(record.dtype)),
                                      name=f"{record.name}:zero_point")
    return scale.get_output(0), zero_point.get_output(0)


def _dequantize(network: NetworkDefinition, tensor: Tensor, record: TensorRecord) -> Tensor:
    scale, zero_point = _quantization_constants(network, record)
    op = ops.DequantizeLinear(record.quantization.axis)
    return network.add_layer(op, [tensor, scale, zero_point], name=f"dequantize:{record.name}").get_output(0)


def _fake_quantize(network: NetworkDefinition, tensor: Tensor, record: TensorRecord) -> Tensor:
    scale, zero_point = _quantization_constants(network, record)
    op = ops.QuantizeLinear(record.quantization.axis, DataType.from_numpy(record.dtype))
    quantized = network.add_layer(op, [tensor, scale, zero_point], name=f"quantize:{record.name}").get_output(0)
    return _dequantize(network, quantized, record)


def _convert_plugin(ctx: TFLiteContext, op: OperatorRecord) -> list[Tensor]:
    """A custom (or unconverted builtin) operator served by the plugin registered under its name."""
    from ...plugins.layer import add_plugin

    params = _custom_options(op)
    inputs = [ctx.input(i) for i in range(len(op.inputs))]
    try:
        layer = add_plugin(ctx.network, op.type_name, inputs, params, name=ctx.name)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    return layer.outputs


def _custom_options(op: OperatorRecord) -> dict:
    if not op.custom_options:
        return {}
    try:
        from flatbuffers import flexbuffers

        decoded = flexbuffers.Loads(op.custom_options)
    except Exception:  # not a flexbuffer map: the plugin gets no parameters
        log.warning("%s: custom options are not a flexbuffer map; the plugin gets no parameters", op.describe())
        return {}
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def parse_tflite(source: ModelSource, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 name: str | None = None) -> NetworkDefinition:
    """Import a TFLite model (path or bytes). Inputs and outputs keep TFLite's layout (NHWC) and dtypes;
    `input_shapes` replaces an input's shape (a batch size, for instance)."""
    return TFLiteParser(input_shapes).parse(source, name)
