"""ONNX model -> NetworkDefinition."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from ...errors import ModelFormatError, ShapeError, UnsupportedOpError
from ...ir import ops
from ...ir.dtypes import DataType
from ...ir.graph import Tensor
from ...limits import ResourceLimits
from ...network import NetworkDefinition
from .context import ConversionContext
from .node_checks import (allowed_type_problem, axis_problem, node_problem, opset_problem, schema_for,
                          type_problem)
from .registry import DEFAULT_DOMAIN, MAX_OPSET, MIN_OPSET, find_converter
from .tensors import load_external_data
from .text_fields import check_text_fields
from .types import onnx_to_datatype

log = logging.getLogger("tensorkiln.importers.onnx")

ModelSource = str | Path | bytes | onnx.ModelProto


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Read an ONNX model, turning protobuf and file errors into one clear ModelFormatError."""
    if isinstance(source, onnx.ModelProto):
        check_text_fields(source, _describe(source))
        load_external_data(source, None, _describe(source))  # refuses external data it cannot find
        return source
    what = _describe(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ModelFormatError(f"{what} does not exist")
    if not isinstance(source, bytes) and Path(source).suffix.lower() in (".prototxt", ".pbtxt", ".caffemodel"):
        raise ModelFormatError(f"{what} is not an ONNX model{other_format_hint(source)}")
    try:
        # external data is read below, each file checked first to lie in the model's folder
        model = (onnx.load_from_string(source) if isinstance(source, bytes) else
                 onnx.load(str(source), load_external_data=False))
    except (DecodeError, text_format.ParseError, RuntimeWarning, ValueError, OSError) as error:
        hint = other_format_hint(source)
        raise ModelFormatError(f"{what} is not an ONNX model{hint}" if hint else
                               f"{what} is not a valid ONNX model (truncated or corrupt?): {error}") from None
    if not model.HasField("graph") or not model.graph.node and not model.graph.output:
        hint = other_format_hint(source)
        raise ModelFormatError(f"{what} is not an ONNX model{hint}" if hint else
                               f"{what} holds no graph; is it an ONNX model? (truncated or corrupt?)")
    check_text_fields(model, what)
    load_external_data(model, None if isinstance(source, bytes) else Path(source).parent, what)
    return model


_CAFFE_TEXT_STARTS = (b"name:", b"input:", b"input_dim:", b"input_shape", b"layer {", b"layers {", b"layer{",
                      b"layers{", b"force_backward:", b"state {")


def other_format_hint(source: ModelSource) -> str:
    """"; it looks like a Caffe prototxt ..." where a file given as ONNX is a Caffe net, else ""."""
    if isinstance(source, onnx.ModelProto):
        return ""
    suffix = "" if isinstance(source, bytes) else Path(source).suffix.lower()
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError:
        data = b""
    lines = [line.strip() for line in data[:4096].splitlines() if line.strip() and not line.strip().startswith(b"#")]
    if suffix in (".prototxt", ".pbtxt") or (lines and lines[0].startswith(_CAFFE_TEXT_STARTS)):
        deploy = str(source) if suffix else "net.prototxt"
        return (f"; it looks like a Caffe prototxt (a text net definition): import it with parse_caffe({deploy!r}, "
                f"'net.caffemodel'), or `kiln build --deploy {deploy} --model net.caffemodel`")
    if suffix == ".caffemodel" or _is_caffemodel(data):
        model = str(source) if suffix else "net.caffemodel"
        return (f"; it looks like a Caffe caffemodel (trained weights): import it with parse_caffe('net.prototxt', "
                f"{model!r}), or `kiln build --deploy net.prototxt --model {model}`")
    return ""


def _is_caffemodel(data: bytes) -> bool:
    """The bytes decode as a Caffe NetParameter whose layers all have a name and a type."""
    from ..caffe.schema import caffe_pb2

    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except DecodeError:
        return False
    layers = list(net.layer) or list(net.layers)
    return bool(layers) and all(layer.name and (layer.type or layer.HasField("layer")) for layer in layers)


def _describe(source: ModelSource) -> str:
    if isinstance(source, onnx.ModelProto):
        return "the ONNX model"
    return "ONNX model bytes" if isinstance(source, bytes) else f"ONNX file {str(source)!r}"


def default_opset(model: onnx.ModelProto, what: str = "the ONNX model") -> int:
    """The version of the default (ai.onnx) operator set the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    if model.opset_import and not _uses_default_domain(model.graph):
        # only other domains (a scikit-learn export in ai.onnx.ml): no operator depends on the default opset, and
        # the missing converters are reported by name, node and opset as for any other model
        return onnx.defs.onnx_opset_version()
    # Without it the meaning of every operator is unknown (guessing the newest opset once accepted a file cut
    # just before its opset_import, its last field), so refuse the model rather than guess.
    imported = [f"{entry.domain}:{entry.version}" for entry in model.opset_import]
    raise ModelFormatError(
        f"{what} has no opset_import for the default domain ('' or 'ai.onnx')"
        + (f" (it imports only {imported})" if imported else "")
        + ", so the versions of its operators are unknown (is the file truncated?); re-export the model, or "
        "declare the opset it was written for: onnx.helper.make_model(graph, opset_imports="
        "[onnx.helper.make_opsetid('', 17)]) or model.opset_import.append(onnx.helper.make_opsetid('', 17))")


def _imports(model: onnx.ModelProto) -> str:
    """'opset 17', or 'opset 17, ai.onnx.ml opset 3': the operator sets the model imports."""
    return ", ".join(("" if e.domain in ("", "ai.onnx") else e.domain + " ") + f"opset {e.version}"
                     for e in model.opset_import)


def _uses_default_domain(graph: onnx.GraphProto) -> bool:
    for node in graph.node:
        if node.domain in ("", "ai.onnx"):
            return True
        for attribute in node.attribute:
            subgraphs = [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]
            if any(_uses_default_domain(g) for g in subgraphs):
                return True
    return False


def unsupported_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node (subgraphs included) that has neither a converter nor a plugin of its op type."""
    from ...plugins.onnx_nodes import plugin_for_node

    missing = []
    for node in graph.node:
        if find_converter(node.domain, node.op_type) is None and not plugin_for_node(node):
            missing.append(node)
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                missing.extend(unsupported_nodes(subgraph))
    return missing


class OnnxParser:
    def __init__(self, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 input_values: Mapping[str, np.ndarray] | None = None, allow_fallback: bool = False,
                 limits: ResourceLimits | None = None, decoded_initializers: dict[str, np.ndarray] | None = None):
        self.decoded_initializers = decoded_initializers  # see ConversionContext.decoded_initializers
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
        self.input_values = dict(input_values or {})
        self.allow_fallback = allow_fallback  # nodes without a converter run on onnx.reference instead of failing
        self.limits = limits  # the memory budget of every tensor (default: ResourceLimits())

    def parse(self, source: ModelSource, name: str | None = None) -> NetworkDefinition:
        model = load_model(source)
        opset = default_opset(model, _describe(source))
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ModelFormatError(f"the model uses ONNX opset {opset}; tensorkiln reads opsets {MIN_OPSET} to "
                                   f"{MAX_OPSET}; convert it with onnx.version_converter.convert_version")
        graph = model.graph
        self._check_supported(graph, model)
        network = NetworkDefinition(name or graph.name or "onnx_model", self.limits)
        ctx = ConversionContext(network, opset)
        ctx.decoded_initializers = self.decoded_initializers
        ctx.domain_versions = {entry.domain: entry.version for entry in model.opset_import}
        ctx.convert_subgraph = lambda subgraph: self._convert_subgraph(ctx, subgraph)
        # every name the model uses is set aside before anything is converted: the layers a converter adds get
        # generated names that can never be one of them, and each value takes its own name when it is produced
        network.ir.reserve_names(model_value_names(graph))
        initializers = {t.name for t in graph.initializer}
        for initializer in graph.initializer:
            if initializer.name not in self.input_values:  # a value given for the input replaces its default
                ctx.add_initializer(initializer, claim=True)
        for value in graph.input:
            if value.name in self.input_values:  # fixed at build time; the engine does not take it as input
                array = np.asarray(self.input_values[value.name])
                ctx.tensors[value.name] = ctx.add_constant_value(array, value.name, claim=True)
            elif value.name not in initializers:  # inputs that shadow initializers are constants, as in TensorRT
                ctx.tensors[value.name] = self._add_input(network, value)
        unknown = sorted((set(self.input_shapes) | set(self.input_values)) - {v.name for v in graph.input})
        if unknown:
            raise ShapeError(f"shapes were given for {unknown}, which are not inputs of the model; its inputs are "
                             f"{[v.name for v in graph.input if v.name not in initializers]}")
        for node in graph.node:
            self._convert(ctx, node)
        for value in graph.output:
            network.mark_output(self._named_output(ctx, value.name))
        return network

    def _check_supported(self, graph: onnx.GraphProto, model: onnx.ModelProto) -> None:
        """One UnsupportedOpError listing every node without a converter or plugin. onnx's reference implementation
        runs default-domain operators only, so --allow-fallback is suggested for those and never for a node of
        another domain (com.microsoft, ai.onnx.ml, ...): that one is named with its domain and that domain's opset,
        and only a plugin (or a model without it) can help."""
        missing = unsupported_nodes(graph)
        standard = [n for n in missing if n.domain in ("", "ai.onnx")]
        other = [n for n in missing if n.domain not in ("", "ai.onnx")]
        if self.allow_fallback:  # the standard ones run on the reference implementation
            standard = []
        if not standard and not other:
            return
        versions = {entry.domain: entry.version for entry in model.opset_import}

        def where(n: onnx.NodeProto) -> str:
            node = repr(n.name or (n.output[0] if n.output else "?"))
            if n.domain in ("", "ai.onnx"):
                return f"{n.op_type} at node {node}"
            return f"{n.op_type} (domain {n.domain}) at node {node} ({n.domain} opset {versions.get(n.domain, '?')})"

        listing = "; ".join(where(n) for n in (*standard, *other))
        message = (f"{len(standard) + len(other)} node(s) of the model ({_imports(model)}) use operators tensorkiln "
                   f"does not support: {listing}. Unsupported operator types: "
                   f"{sorted({n.op_type for n in (*standard, *other)})}.")
        if standard:
            message += (f" For the standard ones ({sorted({n.op_type for n in standard})}): build with allow_fallback "
                        "(--allow-fallback) to run them on onnx's reference implementation, register a plugin for "
                        "them (tensorkiln.plugins.register_plugin), or replace them in the model.")
        if other:
            kinds = sorted({n.op_type for n in other})
            message += (f" Operators outside the default ONNX domain ({kinds}) cannot run on the fallback (onnx's "
                        f"reference implements the default domain only): register a plugin for them "
                        f"(tensorkiln.plugins.register_plugin('{kinds[0]}')), or export the model without them "
                        "(onnxruntime's contrib-op fusions make com.microsoft nodes: save the model before "
                        "optimizing it).")
        raise UnsupportedOpError(message)

    def _add_input(self, network: NetworkDefinition, value: onnx.ValueInfoProto) -> Tensor:
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ModelFormatError(f"input {value.name!r} is not a tensor (sequences and maps are not supported)")
        dtype = onnx_to_datatype(tensor_type.elem_type, f"input {value.name!r}")
        dims = list(tensor_type.shape.dim)
        names = tuple(d.dim_param or None for d in dims)
        if value.name in self.input_shapes:
            shape = self.input_shapes[value.name]
            if len(shape) != len(dims) and tensor_type.HasField("shape"):
                raise ShapeError(f"input {value.name!r} has rank {len(dims)}, but the shape given for it, "
                                 f"{shape}, has rank {len(shape)}")
            return network.add_input(value.name, dtype, shape, names if len(names) == len(shape) else None)
        shape = []
        for index, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(dim.dim_value)
            elif index == 0:
                log.info("input %r: dynamic dimension 0 (%s) set to 1; give --shapes to change it",
                         value.name, dim.dim_param or "?")
                shape.append(1)
            else:
                given = "x".join(d.dim_param or str(d.dim_value) for d in dims)
                raise ShapeError(f"input {value.name!r} has dynamic dimension {index} "
                                 f"({dim.dim_param or 'unnamed'}) in shape [{given}]; give it a size, e.g. --shapes "
                                 f"{value.name}:" + "x".join(str(s) for s in shape) + "x... or input_shapes={...}, "
                                 "or a range of sizes with --minShapes/--optShapes/--maxShapes (optimization "
                                 "profiles)")
        return network.add_input(value.name, dtype, shape, names)

    def _convert(self, ctx: ConversionContext, node: onnx.NodeProto) -> None:
        from ...plugins import onnx_nodes

        fn = find_converter(node.domain, node.op_type)
        if fn is None:  # a registered plugin of the node's op type, else (allow_fallback) the reference
            plugin = onnx_nodes.plugin_for_node(node)
            fn = onnx_nodes.convert_plugin_node if plugin else onnx_nodes.convert_fallback_node
            if not plugin:
                log.warning("fallback layer: node %r (%s, opset %d) runs on onnx's reference implementation (slow)",
                            ctx.name(node), node.op_type, ctx.opset)
        if fn is not onnx_nodes.convert_plugin_node:  # a plugin defines its own node's inputs and attributes
            schema = schema_for(node, ctx.opset, ctx.domain_versions)
            problem = node_problem(node, schema) if schema else opset_problem(node, ctx.opset)
            if problem:
                raise ctx.error(node, f"{problem}; the model is malformed: re-export it")
            dtype_of = lambda name: getattr(ctx.tensors.get(name), "dtype", None)  # noqa: E731
            problem = schema and (type_problem(node, schema, dtype_of) or allowed_type_problem(
                node, schema, dtype_of, lambda name: name in ctx.fp8_types))
            first = ctx.tensors.get(node.input[0]) if node.input and node.input[0] else None
            problem = problem or (first is not None and isinstance(first, Tensor)
                                  and axis_problem(node, len(first.shape)))
            if problem:
                raise ctx.error(node, problem)
        ctx.node = node
        ir = ctx.network.ir
        layers_before = len(ir.layers)
        outputs = fn(ctx, node)
        ir.note_derived_constants(ir.layers[layers_before:], (ctx.tensors.get(name) for name in node.input if name))
        fresh = {id(t) for layer in ir.layers[layers_before:] for t in layer.outputs}
        for index, onnx_name in enumerate(node.output):
            if not onnx_name:
                continue
            if index >= len(outputs) or outputs[index] is None:
                raise ctx.error(node, f"output {index} ({onnx_name!r}) is not supported by tensorkiln")
            tensor = outputs[index]
            if id(tensor) in fresh:  # a tensor this node made (not an input passed through) takes the output's name
                fresh.discard(id(tensor))  # (once: a converter may return one tensor for two outputs)
                if ctx.in_subgraph:  # subgraph names may repeat across branches and loop bodies
                    ir.rename_unique(tensor, onnx_name)
                else:  # reserved for it up front, so no generated name can hold it
                    ir.rename(tensor, onnx_name)
            ctx.tensors[onnx_name] = tensor

    def _convert_subgraph(self, ctx: ConversionContext, graph: onnx.GraphProto) -> list[Tensor]:
        """Convert a subgraph (an If branch, a Loop body) inline; its names stay local to it."""
        saved_tensors, saved_node, saved_scope = dict(ctx.tensors), ctx.node, ctx.in_subgraph
        ctx.in_subgraph = True
        try:
            for initializer in graph.initializer:
                ctx.add_initializer(initializer, claim=False)
            for node in graph.node:
                self._convert(ctx, node)
            missing = [o.name for o in graph.output if o.name not in ctx.tensors]
            if missing:
                raise ModelFormatError(f"subgraph {graph.name!r} does not produce its outputs {missing}")
            return [ctx.tensors[o.name] for o in graph.output]
        finally:
            ctx.tensors, ctx.node, ctx.in_subgraph = saved_tensors, saved_node, saved_scope

    @staticmethod
    def _named_output(ctx: ConversionContext, name: str) -> Tensor:
        if name not in ctx.tensors:
            raise ModelFormatError(f"graph output {name!r} is not produced by any node")
        tensor, ir = ctx.tensors[name], ctx.network.ir
        if tensor.name == name and tensor in ir.inputs:
            raise ModelFormatError(f"graph output {name!r} is also a graph input of that name; an engine's inputs "
                                   "and outputs need names of their own: give the output another name (an Identity "
                                   "node in the model)")
        if tensor.name == name and tensor.is_constant:
            ir.rename_unique(tensor, f"{name}:value")  # the name goes to the output layer below
        if tensor.name == name and tensor.producer is not None and tensor.producer.kind != ops.Constant.KIND:
            return tensor
        # an output that is a graph input, a constant, or another output's alias gets a layer of its own
        return ctx.network.add_layer(ops.Identity(), [tensor], name=f"output:{name}", output_names=[name]).get_output(0)


def model_value_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name the model uses (its subgraphs' included), after checking that the main graph names each
    value once: a name produced by two nodes, or by a node and an input or initializer, is a malformed model."""
    owners: dict[str, str] = {}

    def own(value_name: str, owner: str) -> None:
        if value_name in owners:
            raise ModelFormatError(f"the ONNX graph names two values {value_name!r} ({owners[value_name]} and "
                                   f"{owner}); every value needs a name of its own (the model is malformed: "
                                   "re-export it, or check it with onnx.checker.check_model)")
        owners[value_name] = owner

    for initializer in graph.initializer:
        own(initializer.name, "an initializer")
    for value in graph.input:
        if value.name not in owners or owners[value.name] != "an initializer":  # an initializer's default input
            own(value.name, "a graph input")
    for node in graph.node:
        for output in node.output:
            if output:
                own(output, f"an output of node {node.name or node.op_type!r}")
    names = set(owners) | {v.name for v in graph.output}
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                names |= _subgraph_value_names(subgraph)
    return names


def _subgraph_value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(n for n in node.output if n)
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                names |= _subgraph_value_names(subgraph)
    return names


def parse_onnx(source: ModelSource, input_shapes: Mapping[str, Sequence[int]] | None = None,
               name: str | None = None, input_values: Mapping[str, np.ndarray] | None = None,
               allow_fallback: bool = False, limits: ResourceLimits | None = None,
               decoded_initializers: dict[str, np.ndarray] | None = None) -> NetworkDefinition:
    """Import an ONNX model (path, bytes or ModelProto).

    `input_shapes` fixes dynamic input dimensions; `input_values` fixes the value of inputs that must be
    known at build time (axes, pads, sizes fed as inputs), which the engine then no longer takes.
    `allow_fallback` runs standard operators without a converter on onnx's reference implementation
    (logged once per layer) instead of failing. A node of any domain whose op type names a registered
    plugin becomes a layer of that plugin. `limits` bounds the memory any one tensor, and the constants together,
    may need (tensorkiln.limits; default: half the machine's memory, at most 32 GiB). `decoded_initializers`: a
    dict kept between imports of the same model, which then decode each initializer once (read-only arrays)."""
    return OnnxParser(input_shapes, input_values, allow_fallback, limits, decoded_initializers).parse(source, name)
