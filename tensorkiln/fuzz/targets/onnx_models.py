"""ONNX models as a careless exporter or an attacker writes them: protobuf fields of a ModelProto mutated (dims,
data types, raw data, attribute values of every type, op types, domains, node wiring, opset and IR versions,
external data entries), nodes added that ask for absurd amounts of memory, or the serialized bytes cut. Each
case is imported from a file (so external data resolves against its folder), built, reloaded and run, and where
onnxruntime runs the model too, the outputs are compared with its outputs (reference.py).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..case import Case
from ..choices import Choices
from ..execution import CaseRun, reload, run_engine
from ..proto_mutator import ProtoMutator
from ..reference import compare, drops_nan_by_position, reference_outputs
from ..seeds import SeedBundle
from . import fuzz_target

DATA_TYPES = tuple(TensorProto.DataType.values()) + (99, -1)
OPSETS = (1, 6, 7, 9, 11, 13, 17, 18, 21, 22, 23, 99, 0, -1, 2**31 - 1)
DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "custom.domain", "ai.onnx.preview.training")
ATTRIBUTE_NAMES = ("axis", "axes", "perm", "pads", "strides", "kernel_shape", "group", "dilations", "epsilon",
                   "alpha", "beta", "transA", "transB", "keepdims", "mode", "to", "value", "split", "auto_pad",
                   "ceil_mode", "output_padding", "allowzero", "batch_dims", "k", "largest", "noop_with_empty_axes")
# where an initializer's external data may point: inside the model's folder, outside it, absolute, missing
EXTERNAL_LOCATIONS = ("weights.bin", "../outside.bin", "/etc/hostname", "missing.bin", "sub/../weights.bin", "",
                      ".", "model.onnx", "weights.bin\u0000x")
SCRATCH_WEIGHTS = np.arange(256, dtype=np.float32).tobytes()


def value_names(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return sorted(names)


class OnnxMutator:
    """Mutations of a ModelProto aimed at what an importer trusts."""

    def __init__(self, choices: Choices, model: onnx.ModelProto, ops: tuple[str, ...]):
        self.choices, self.model, self.ops = choices, model, ops
        self.graph = model.graph
        self.names = value_names(model)
        self.generic = ProtoMutator(choices, self.names)

    def mutate(self) -> str:
        focused = [(5, self.dim), (3, self.data_type), (4, self.initializer_values), (2, self.raw_data_size),
                   (8, self.attribute), (3, self.op_type), (1, self.domain), (4, self.wiring), (2, self.nodes),
                   (2, self.opset), (2, self.external_data), (2, self.hostile_node)]
        if self.choices.integer(0, 3) == 0 or not self.graph.node:
            return self.generic.mutate(self.model)
        try:
            return self.choices.weighted(focused)()
        except (ValueError, TypeError, OverflowError) as error:  # protobuf refused the value: the case still runs
            return f"(a mutation protobuf refused: {type(error).__name__})"

    def _value_infos(self) -> list:
        graph = self.graph
        return [v for v in (*graph.input, *graph.output, *graph.value_info) if v.type.HasField("tensor_type")]

    def dim(self) -> str:
        infos, inits = self._value_infos(), list(self.graph.initializer)
        if inits and (not infos or self.choices.boolean()):
            tensor = self.choices.choice(inits)
            dims, name = tensor.dims, tensor.name
        elif infos:
            info = self.choices.choice(infos)
            dims, name = info.type.tensor_type.shape.dim, info.name
        else:
            return self.generic.mutate(self.model)
        if not len(dims) or self.choices.integer(0, 4) == 0:
            return f"{name}: rank edit ({self._rank_edit(dims)})"
        i = self.choices.integer(0, len(dims) - 1)
        if isinstance(dims[i], int):
            dims[i] = self.generic.scalar(TensorProto.DESCRIPTOR.fields_by_name["dims"], dims[i])
            return f"{name}: dims[{i}] = {dims[i]}"
        if self.choices.boolean():
            dims[i].dim_value = self.choices.choice((0, 1, 2, 10**5, 10**10, 2**62))
        else:
            dims[i].dim_param = self.choices.choice(("N", "batch", "", "?", "-1"))
        return f"{name}: dim[{i}] = {str(dims[i]).strip()}"

    def _rank_edit(self, dims) -> str:
        if len(dims) and self.choices.boolean():
            del dims[self.choices.integer(0, len(dims) - 1)]
            return "dropped"
        if hasattr(dims, "add"):
            dims.add().dim_value = self.choices.choice((1, 2, 0))
        else:
            dims.append(self.choices.choice((1, 2, 0)))
        return "added"

    def data_type(self) -> str:
        new = self.choices.choice(DATA_TYPES)
        infos, inits = self._value_infos(), list(self.graph.initializer)
        if inits and (not infos or self.choices.boolean()):
            tensor = self.choices.choice(inits)
            tensor.data_type = new
            return f"initializer {tensor.name}: data_type = {new}"
        info = self.choices.choice(infos)
        info.type.tensor_type.elem_type = new
        return f"{info.name}: elem_type = {new}"

    def _inline_initializers(self) -> list:
        """Initializers held in the model (to_array would read an external one from wherever it points) whose
        values onnx can still read (an earlier mutation may have given one data type 99, or cut its data)."""
        return [t for t in self.graph.initializer if t.data_location != TensorProto.EXTERNAL and _readable(t)]

    def initializer_values(self) -> str:
        if not self._inline_initializers():
            return self.generic.mutate(self.model)
        tensor = self.choices.choice(self._inline_initializers())
        array = numpy_helper.to_array(tensor).copy()
        if array.size == 0:
            return self.raw_data_size()
        flat = array.reshape(-1)
        i = self.choices.integer(0, flat.size - 1)
        if array.dtype.kind in "iu":
            info = np.iinfo(array.dtype)
            options = [v for v in (0, -1, 1, 2, 7, 10**5, 10**10, 2**31, info.max, info.min)
                       if info.min <= v <= info.max]
            flat[i] = self.choices.choice(options)
        elif array.dtype.kind == "f":
            flat[i] = self.choices.choice((np.nan, np.inf, -np.inf, 0.0, 1e30, -0.0))
            if self.choices.integer(0, 3) == 0:
                flat[:] = flat[i]
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
        return f"initializer {tensor.name}[{i}] = {flat[i]}"

    def raw_data_size(self) -> str:
        if not self._inline_initializers():
            return self.generic.mutate(self.model)
        tensor = self.choices.choice(self._inline_initializers())
        if not tensor.raw_data:
            array = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
        tensor.raw_data = self.generic.bytes_value(tensor.raw_data)
        return f"initializer {tensor.name}: raw_data of {len(tensor.raw_data)} bytes for dims {list(tensor.dims)}"

    def attribute(self) -> str:
        nodes = list(self.graph.node)
        if not nodes:
            return self.generic.mutate(self.model)
        node = self.choices.choice(nodes)
        edit = self.choices.choice(("value", "value", "value", "drop", "add", "type"))
        if edit == "add" or not node.attribute:
            name = self.choices.choice(ATTRIBUTE_NAMES)
            value = self.choices.choice((self.choices.interesting_int(), [self.choices.interesting_int()] * 2,
                                         self.choices.interesting_float(), "x", [0, 1, 2]))
            node.attribute.append(helper.make_attribute(name, value))
            return f"node {node.name or node.op_type}: add {name} = {value!r}"[:200]
        attribute = self.choices.choice(list(node.attribute))
        if edit == "drop":
            node.attribute.remove(attribute)
            return f"node {node.name or node.op_type}: drop {attribute.name}"
        if edit == "type":
            attribute.type = self.choices.choice(tuple(onnx.AttributeProto.AttributeType.values()))
            return f"node {node.name or node.op_type}: {attribute.name} type = {attribute.type}"
        return f"node {node.name or node.op_type}: attribute {self.generic.mutate(attribute)}"

    def op_type(self) -> str:
        node = self.choices.choice(list(self.graph.node))
        old = node.op_type
        node.op_type = self.choices.choice((self.choices.choice(self.ops), self.choices.text()))
        return f"node {node.name or old}: op_type {old} -> {node.op_type}"

    def domain(self) -> str:
        if self.choices.boolean() and self.graph.node:
            node = self.choices.choice(list(self.graph.node))
            node.domain = self.choices.choice(DOMAINS)
            return f"node {node.op_type}: domain = {node.domain!r}"
        entry = self.model.opset_import.add()
        entry.domain, entry.version = self.choices.choice(DOMAINS), self.choices.choice(OPSETS)
        return f"opset import {entry.domain!r} {entry.version}"

    def wiring(self) -> str:
        node = self.choices.choice(list(self.graph.node))
        wires = node.input if self.choices.boolean() or not node.output else node.output
        edit = self.choices.choice(("rename", "rename", "empty", "drop", "duplicate", "unknown"))
        if edit == "drop" and len(wires):
            del wires[self.choices.integer(0, len(wires) - 1)]
        elif edit == "duplicate" and len(wires):
            wires.append(wires[self.choices.integer(0, len(wires) - 1)])
        elif len(wires):
            new = {"rename": self.choices.choice(self.names), "empty": ""}.get(edit, "nowhere")
            wires[self.choices.integer(0, len(wires) - 1)] = new
        return f"node {node.name or node.op_type}: {edit} wire -> {list(node.input)} / {list(node.output)}"

    def nodes(self) -> str:
        nodes = self.graph.node
        i = self.choices.integer(0, len(nodes) - 1)
        edit = self.choices.choice(("drop", "duplicate", "move_last", "graph_output"))
        if edit == "drop":
            del nodes[i]
        elif edit == "duplicate":
            nodes.add().CopyFrom(nodes[i])
        elif edit == "move_last":
            copy = onnx.NodeProto()
            copy.CopyFrom(nodes[i])
            del nodes[i]
            nodes.add().CopyFrom(copy)
        else:  # an input, an initializer or an intermediate value becomes a graph output
            self.graph.output.append(helper.make_tensor_value_info(self.choices.choice(self.names), 1, None))
        return f"nodes: {edit} [{i}]"

    def opset(self) -> str:
        if self.choices.integer(0, 3) == 0:
            self.model.ir_version = self.choices.choice((0, 1, 3, 4, 7, 8, 10, 11, 99))
            return f"ir_version = {self.model.ir_version}"
        entry = self.choices.choice(list(self.model.opset_import))
        entry.version = self.choices.choice(OPSETS)
        return f"opset {entry.domain!r} = {entry.version}"

    def external_data(self) -> str:
        if not self.graph.initializer:
            return self.generic.mutate(self.model)
        tensor = self.choices.choice(list(self.graph.initializer))
        tensor.ClearField("raw_data")
        for field in ("float_data", "int64_data", "int32_data", "double_data"):
            tensor.ClearField(field)
        tensor.data_location = self.choices.choice((TensorProto.EXTERNAL, TensorProto.EXTERNAL, TensorProto.DEFAULT))
        del tensor.external_data[:]
        entries = {"location": self.choices.choice(EXTERNAL_LOCATIONS),
                   "offset": str(self.choices.choice((0, 4, 1023, 10**12, -4))),
                   "length": str(self.choices.choice((0, 4, 16, 1024, 10**12, -1)))}
        for key, value in entries.items():
            if self.choices.integer(0, 4) or key == "location":
                tensor.external_data.add(key=key, value=value)
        return f"initializer {tensor.name}: external {entries}"

    def hostile_node(self) -> str:
        """A node whose output would need gigabytes, added as a graph output (memory-budget checks)."""
        big = self.choices.choice((10**5, 2**31))  # always absurd: [big, big] never fits in memory
        name = self.choices.choice(("ConstantOfShape", "Expand", "Range", "Tile", "Pad", "Resize"))
        source = self.graph.input[0].name if self.graph.input else "x"
        shape = numpy_helper.from_array(np.array([big, big], np.int64), f"fuzz_shape_{len(self.graph.node)}")
        self.graph.initializer.append(shape)
        out = f"fuzz_out_{len(self.graph.node)}"
        if name == "ConstantOfShape":
            node = helper.make_node(name, [shape.name], [out])
        elif name == "Range":
            limits = [numpy_helper.from_array(np.array(v, np.float32), f"{out}_{i}")
                      for i, v in enumerate((0, 1e10, 1))]
            self.graph.initializer.extend(limits)
            node = helper.make_node(name, [t.name for t in limits], [out])
        elif name in ("Expand", "Tile"):
            node = helper.make_node(name, [source, shape.name], [out])
        elif name == "Pad":
            pads = numpy_helper.from_array(np.array([big] * 8, np.int64), f"{out}_pads")
            self.graph.initializer.append(pads)
            node = helper.make_node(name, [source, pads.name], [out])
        else:
            scales = numpy_helper.from_array(np.array([1, 1, big, big], np.float32), f"{out}_scales")
            self.graph.initializer.append(scales)
            node = helper.make_node(name, [source, "", scales.name], [out])
        self.graph.node.append(node)
        self.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        return f"hostile {name} of {big} x {big}"


def _readable(tensor: TensorProto) -> bool:
    try:
        numpy_helper.to_array(tensor)
    except Exception:  # noqa: BLE001 - onnx raises KeyError, ValueError, TypeError for broken tensors
        return False
    return True


def raw_bytes_mutation(choices: Choices, blob: bytes) -> tuple[bytes, str]:
    if choices.boolean():
        cut = choices.integer(0, len(blob) - 1)
        return blob[:cut], f"serialized model cut at {cut} of {len(blob)} bytes"
    data = bytearray(blob)
    for _ in range(choices.integer(1, 8)):
        data[choices.integer(0, len(data) - 1)] ^= 1 << choices.integer(0, 7)
    return bytes(data), "bits of the serialized model flipped"


def mutate_onnx(choices: Choices, bundle: SeedBundle) -> Case:
    from ...importers.onnx import supported_ops

    seed = choices.choice(sorted(bundle.onnx_models))
    blob = bundle.onnx_models[seed]
    if choices.integer(0, 9) == 0:
        blob, description = raw_bytes_mutation(choices, blob)
        descriptions = [description]
    else:
        model = onnx.load_from_string(blob)
        mutator = OnnxMutator(choices, model, tuple(supported_ops()))
        descriptions = [mutator.mutate() for _ in range(choices.weighted([(6, 1), (3, 2), (1, 3)]))]
        blob = model.SerializeToString()
    info = {"seed": seed, "mutations": descriptions, "input_seed": choices.integer(0, 2**31),
            "allow_fallback": choices.integer(0, 3) == 0}
    return Case("onnx", (blob,), info)


def prepare_scratch(run: CaseRun):
    """The model's folder, with a weights file for external data to point at, and a file outside it."""
    folder = run.scratch / "model"
    folder.mkdir(parents=True, exist_ok=True)
    for path in (folder / "weights.bin", run.scratch / "outside.bin"):
        if not path.exists():
            path.write_bytes(SCRATCH_WEIGHTS)
    return folder / "model.onnx"


@fuzz_target("onnx", "ONNX protobuf field mutations; import, build, reload, execute", mutate_onnx)
def run_onnx_case(case: Case, run: CaseRun) -> None:
    from ...builder import Builder
    from ...importers.onnx import parse_onnx

    path = prepare_scratch(run)
    path.write_bytes(case.parts[0])
    run.stage = "parse"
    network = parse_onnx(path, allow_fallback=case.info.get("allow_fallback", False))
    run.stage = "build"
    engine = reload(Builder().build(network), run)
    feed, outputs = run_engine(engine, run, case.info.get("input_seed", 0))
    run.stage = "reference"
    expected = reference_outputs(str(path), feed, list(outputs))
    if expected is None:
        run.stage = "no reference"  # onnxruntime refused the model: nothing to compare with
        return
    compare(outputs, expected, f"reference:{case.info.get('seed', '?')}", drops_nan_by_position(str(path)))
    run.stage = "compared"
