"""Caffe net (deploy.prototxt + .caffemodel) -> NetworkDefinition.

V1 nets (`layers`, enum types) are upgraded on the fly: every layer gets its V2 type name
(caffemodel.layer_type_name) and the same parameter fields serve both layouts. Blobs written in place
(`top` equal to `bottom`, as ReLU usually is) get a fresh tensor per write; the final value of each blob
carries the blob's name. Output blobs default to the tops no later layer reads.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

from ...errors import ModelFormatError, ShapeError, UnsupportedOpError
from ...ir import ops
from ...ir.dtypes import DataType
from ...ir.graph import Tensor
from ...limits import ResourceLimits
from ...network import NetworkDefinition
from ...plugins import find_plugin, registered_plugins
from ...plugins.registry import register_hint
from ..names import name_problem
from .caffemodel import AnyLayer, iter_layers, layer_blobs, layer_name, layer_type_name, read_caffemodel, read_prototxt
from .context import CaffeContext
from .registry import find_converter, supported_layer_types
from .schema import caffe_pb2

log = logging.getLogger("tensorkiln.importers.caffe")

# layers that only feed training or evaluation: dropped from deploy nets
_TRAINING_ONLY = {"Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
                  "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "Silence"}
_DATA_LAYERS = {"Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData"}


class CaffeParser:
    def __init__(self, input_shapes: Mapping[str, Sequence[int]] | None = None, batch_size: int | None = None,
                 limits: ResourceLimits | None = None):
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
        self.batch_size = batch_size
        self.limits = limits  # the memory budget of every tensor, inputs included (default: ResourceLimits())

    def parse(self, deploy: str | Path, model: str | Path | None = None, outputs: Sequence[str] | None = None,
              name: str | None = None) -> NetworkDefinition:
        net = read_prototxt(deploy)
        weights = layer_blobs(read_caffemodel(model)) if model is not None else {}
        layers = [layer for layer in iter_layers(net) if _in_test_phase(layer)]
        _check_names(net, layers)
        self._check_supported(layers)
        network = NetworkDefinition(name or net.name or Path(deploy).stem, self.limits)
        # every blob name is set aside before anything is converted: the layers a converter adds get generated
        # names that can never be one of them, and each blob's value takes the blob's name when it is written
        network.ir.reserve_names([*net.input, *(blob for layer in layers for blob in (*layer.bottom, *layer.top))])
        ctx = CaffeContext(network, weights, model is not None)
        produced: list[str] = []  # blob names in the order of their last write
        for input_name, shape in _net_inputs(net):
            self._add_input(ctx, input_name, shape)
            produced.append(input_name)
        consumed: set[str] = set()
        for layer in layers:
            if layer_type_name(layer) in _TRAINING_ONLY:
                log.info("layer %r (%s) only serves training; left out", layer_name(layer), layer_type_name(layer))
                continue
            consumed.update(layer.bottom)
            consumed.difference_update(layer.top)  # an in-place write makes a fresh, unread value
            if layer_type_name(layer) in _DATA_LAYERS:
                for top, shape in zip(layer.top, _data_layer_shapes(layer)):
                    self._add_input(ctx, top, shape)
            else:
                self._convert(ctx, layer)
            produced = [b for b in produced if b not in layer.top] + list(layer.top)
        wanted = list(outputs) if outputs else [b for b in produced if b not in consumed]
        unknown = [b for b in wanted if b not in ctx.blobs]
        if unknown:
            raise ShapeError(f"output blob(s) {unknown} are not produced by the net; its blobs are {produced}")
        if not outputs:  # inputs no layer reads are not outputs
            wanted = [b for b in wanted if b not in {t.name for t in network.ir.inputs}]
        for blob in wanted:
            network.mark_output(self._output(ctx, blob))
        unused = sorted(set(self.input_shapes) - {t.name for t in network.ir.inputs})
        if unused:
            raise ShapeError(f"shapes were given for {unused}, which are not inputs of the net; its inputs are "
                             f"{[t.name for t in network.ir.inputs]}")
        return network

    # ---- inputs -----------------------------------------------------------------------------------
    def _add_input(self, ctx: CaffeContext, name: str, shape: Sequence[int] | None) -> None:
        shape = self.input_shapes.get(name, shape)
        if shape is None:
            raise ShapeError(f"the net does not give the shape of its input {name!r}; give it one "
                             f"(input_shapes={{{name!r}: (N, C, H, W)}}, or --shapes {name}:NxCxHxW)")
        shape = tuple(int(d) for d in shape)
        if self.batch_size is not None and name not in self.input_shapes and shape:
            shape = (self.batch_size, *shape[1:])
        ctx.blobs[name] = ctx.network.add_input(name, DataType.FLOAT, shape)

    # ---- layers -----------------------------------------------------------------------------------
    def _check_supported(self, layers: list[AnyLayer]) -> None:
        missing = [layer for layer in layers if _converter_for(layer) is None and
                   layer_type_name(layer) not in _DATA_LAYERS | _TRAINING_ONLY]
        if missing:
            kinds = sorted({layer_type_name(layer) for layer in missing})
            listing = "; ".join(f"{layer_type_name(layer)} at layer {layer_name(layer)!r}" for layer in missing)
            raise UnsupportedOpError(
                f"{len(missing)} layer(s) of the net have types tensorkiln does not support: {listing}. Unknown "
                f"layer types: {kinds}. Supported: {supported_layer_types()}; plugins registered: "
                f"{registered_plugins()}. For a custom layer, {register_hint(kinds[0])}")

    def _convert(self, ctx: CaffeContext, layer: AnyLayer) -> None:
        fn = _converter_for(layer)
        ir = ctx.network.ir
        layers_before = len(ir.layers)
        outputs = fn(ctx, layer)
        if len(outputs) != len(layer.top):
            raise ctx.error(layer, f"has {len(layer.top)} top(s), the converter made {len(outputs)} outputs")
        fresh = {id(t) for new in ir.layers[layers_before:] for t in new.outputs}
        for top, tensor in zip(layer.top, outputs):
            if id(tensor) in fresh:  # name the value after its blob; later in-place writes get derived names
                fresh.discard(id(tensor))
                if ir.tensor_name_taken(top):
                    ir.rename_unique(tensor, f"{top}/{layer_name(layer)}")
                else:
                    ir.rename(tensor, top)
            ctx.blobs[top] = tensor

    @staticmethod
    def _output(ctx: CaffeContext, blob: str) -> Tensor:
        """The final tensor of `blob`, named `blob` (the name moves from an earlier in-place value)."""
        tensor, ir = ctx.blobs[blob], ctx.network.ir
        if tensor.name == blob:
            return tensor
        holder = next((t for t in ir.tensors() if t.name == blob), None)
        if tensor in ir.inputs or tensor.is_constant or (holder is not None and holder in ir.inputs):
            output = ctx.network.add_layer(ops.Identity(), [tensor], name=f"output:{blob}").get_output(0)
            if holder is not None:  # an input keeps the blob's name; the output gets one made from it
                ir.rename_unique(output, blob)
            else:
                ir.rename(output, blob)
            return output
        if holder is not None:
            ir.rename_unique(holder, f"{blob}:before")
        ir.rename(tensor, blob)
        return tensor


def _converter_for(layer: AnyLayer):
    """The converter of a layer's type; for a type without one, a registered plugin of that name."""
    kind = layer_type_name(layer)
    fn = find_converter(kind)
    if fn is None and find_plugin(kind) is not None:
        from .layers.plugin import convert_plugin_layer

        return convert_plugin_layer
    return fn


def _in_test_phase(layer: AnyLayer) -> bool:
    """Caffe's NetStateRule filter for the TEST phase (deploy nets rarely have rules)."""
    if any(rule.HasField("phase") and rule.phase != caffe_pb2.TEST for rule in layer.include):
        return False
    if isinstance(layer, caffe_pb2.LayerParameter) and layer.HasField("phase") and layer.phase != caffe_pb2.TEST:
        return False
    return not any(rule.HasField("phase") and rule.phase == caffe_pb2.TEST for rule in layer.exclude)


def _check_names(net: caffe_pb2.NetParameter, layers: list[AnyLayer]) -> None:
    """Every input, layer and blob name must be one an engine can hold (importers/names.py)."""
    named = [("the net's name", net.name, True), *((f"input {name!r}", name, False) for name in net.input)]
    for layer in layers:
        where = f"layer {layer_name(layer)!r} ({layer_type_name(layer)})"
        named.append((f"the name of {where}", layer_name(layer), True))  # an unnamed layer gets a generated name
        named.extend((f"a bottom of {where}", blob, False) for blob in layer.bottom)
        named.extend((f"a top of {where}", blob, False) for blob in layer.top)
    for where, name, allow_empty in named:
        problem = name_problem(name, allow_empty)
        if problem:
            raise ModelFormatError(f"in the Caffe net, {where} {problem}: {name[:80]!r}; give it a plain name")


def _net_inputs(net: caffe_pb2.NetParameter) -> list[tuple[str, tuple[int, ...] | None]]:
    """The net-level inputs (`input:` with `input_shape` or four `input_dim` each)."""
    result = []
    for index, name in enumerate(net.input):
        if index < len(net.input_shape):
            result.append((name, tuple(net.input_shape[index].dim)))
        elif len(net.input_dim) >= 4 * (index + 1):
            result.append((name, tuple(net.input_dim[4 * index:4 * index + 4])))
        else:
            result.append((name, None))
    return result


def _data_layer_shapes(layer: AnyLayer) -> list[tuple[int, ...] | None]:
    """Shapes of the tops of an input layer, where the prototxt gives them."""
    kind = layer_type_name(layer)
    if kind == "Input":
        shapes = [tuple(s.dim) for s in layer.input_param.shape]
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
        return shapes + [None] * (len(layer.top) - len(shapes))
    if kind == "MemoryData":
        p = layer.memory_data_param
        return [(p.batch_size, p.channels, p.height, p.width)] + [None] * (len(layer.top) - 1)
    if kind == "DummyData":
        return [tuple(s.dim) for s in layer.dummy_data_param.shape] + [None] * len(layer.top)
    return [None] * len(layer.top)


def parse_caffe(deploy: str | Path, model: str | Path | None = None, outputs: Sequence[str] | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None, batch_size: int | None = None,
                name: str | None = None, limits: ResourceLimits | None = None) -> NetworkDefinition:
    """Import a Caffe net: the text `deploy` prototxt and the binary `model` caffemodel (its trained blobs).

    `outputs` names the output blobs (default: every top no later layer reads); `input_shapes` overrides input
    shapes ({blob: shape}); `batch_size` replaces the leading dim of every input not given in input_shapes; `limits`
    bounds the memory any one tensor (an `input_dim: 100000` input), and the weights together, may need."""
    if not str(deploy).endswith((".prototxt", ".pbtxt", ".txt")) and str(deploy).endswith(".caffemodel"):
        raise ModelFormatError(f"{str(deploy)!r} looks like a caffemodel; give the text prototxt as the deploy file "
                               "and the caffemodel as the model")
    return CaffeParser(input_shapes, batch_size, limits).parse(deploy, model, outputs, name)
