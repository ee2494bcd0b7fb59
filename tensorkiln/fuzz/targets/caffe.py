"""Caffe nets as old model zoos ship them and as an attacker edits them: prototxt mutations (as protobuf fields:
layer types, parameters, bottoms and tops, input dims, layer order; and as text: numbers, names, cut lines) and
caffemodel mutations (blob shapes, data lengths, legacy dims, double data, layer names, cut bytes). Each case is
imported from files, built, reloaded and run.
"""
from __future__ import annotations

import re

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from ..case import Case
from ..choices import Choices
from ..execution import CaseRun, reload, run_engine
from ..proto_mutator import ProtoMutator
from ..seeds import SeedBundle
from . import fuzz_target

ODD_TYPES = ("", "Python", "Convolution ", "convolution", "Input", "Data", "Silence", "SoftmaxWithLoss", "Crop")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?(?![\w.])")
_QUOTED = re.compile(r'"[^"\n]*"')


def _schema():
    from ...importers.caffe.schema import caffe_pb2

    return caffe_pb2


def _layers(net):
    return list(net.layer) + list(net.layers)


class NetMutator:
    """Mutations of a prototxt NetParameter aimed at what the Caffe importer trusts."""

    def __init__(self, choices: Choices, net, layer_types: tuple[str, ...]):
        self.choices, self.net, self.layer_types = choices, net, layer_types
        self.blobs = sorted({b for layer in _layers(net) for b in (*layer.bottom, *layer.top)} | set(net.input))
        self.generic = ProtoMutator(choices, self.blobs + [layer.name for layer in _layers(net)])

    def mutate(self) -> str:
        layers = _layers(self.net)
        if not layers or self.choices.integer(0, 4) == 0:
            return self.generic.mutate(self.net)
        layer = self.choices.choice(layers)
        edit = self.choices.weighted([(6, "param"), (3, "type"), (4, "wiring"), (2, "order"), (2, "input"),
                                      (1, "phase")])
        try:
            return f"layer {layer.name!r}: {getattr(self, edit)(layer)}"
        except (ValueError, TypeError, OverflowError) as error:  # protobuf refused the value
            return f"(a mutation protobuf refused: {type(error).__name__})"

    def param(self, layer) -> str:
        """A field of the layer's parameters (convolution_param, pooling_param, ...): generic, but kept here."""
        return self.generic.mutate(layer)

    def type(self, layer) -> str:
        if isinstance(layer, _schema().V1LayerParameter):
            values = [v.number for v in layer.DESCRIPTOR.fields_by_name["type"].enum_type.values]
            layer.type = self.choices.choice(values)
        else:
            layer.type = self.choices.choice((self.choices.choice(self.layer_types), self.choices.choice(ODD_TYPES)))
        return f"type = {layer.type!r}"

    def wiring(self, layer) -> str:
        wires = layer.bottom if self.choices.boolean() else layer.top
        edit = self.choices.choice(("rename", "rename", "drop", "duplicate", "unknown", "empty"))
        if edit == "drop" and len(wires):
            del wires[self.choices.integer(0, len(wires) - 1)]
        elif edit == "duplicate" and len(wires):
            wires.append(wires[self.choices.integer(0, len(wires) - 1)])
        elif len(wires):
            new = {"rename": self.choices.choice(self.blobs or ["data"]), "empty": ""}.get(edit, "nowhere")
            wires[self.choices.integer(0, len(wires) - 1)] = new
        return f"{edit} -> bottom {list(layer.bottom)} top {list(layer.top)}"

    def order(self, layer) -> str:
        container = self.net.layer if len(self.net.layer) else self.net.layers
        i = self.choices.integer(0, len(container) - 1)
        edit = self.choices.choice(("drop", "duplicate", "move_last"))
        copy = type(container[i])()
        copy.CopyFrom(container[i])
        if edit != "duplicate":
            del container[i]
        if edit != "drop":
            container.add().CopyFrom(copy)
        return f"layer [{i}] {edit}"

    def input(self, layer) -> str:
        """A dim of the net's input shapes (input_dim, input_shape, Input layers): `input_dim: 100000` and kin."""
        net = self.net
        shapes = [net.input_dim] + [s.dim for s in net.input_shape]
        shapes += [s.dim for one in net.layer if one.HasField("input_param") for s in one.input_param.shape]
        shapes = [dims for dims in shapes if len(dims)]
        if not shapes:
            return self.generic.mutate(layer)
        dims = self.choices.choice(shapes)
        i = self.choices.integer(0, len(dims) - 1)
        dims[i] = self.choices.choice((0, -1, 100000, 2**31 - 1, 2**40, 1, 3))
        return f"input dim [{i}] = {dims[i]}"

    def phase(self, layer) -> str:
        rule = layer.include.add() if self.choices.boolean() else layer.exclude.add()
        rule.phase = self.choices.choice((0, 1))
        return f"phase rule {rule.phase}"


def mutate_text(choices: Choices, text: str, names: list[str]) -> tuple[str, str]:
    """Text edits a hand-edited prototxt suffers: numbers, quoted names, lines, braces."""
    edit = choices.choice(("number", "number", "name", "drop_line", "duplicate_line", "cut", "brace"))
    lines = text.splitlines()
    i = choices.integer(0, len(lines) - 1)
    if edit == "number" and _NUMBER.search(lines[i]):
        matches = list(_NUMBER.finditer(lines[i]))
        match = choices.choice(matches)
        new = str(choices.choice((0, -1, 100000, 2**31, 2**64, "1e999", "nan", "0.5", "-0")))
        lines[i] = lines[i][:match.start()] + new + lines[i][match.end():]
        return "\n".join(lines), f"line {i}: a number -> {new}"
    if edit == "name" and _QUOTED.search(lines[i]):
        match = choices.choice(list(_QUOTED.finditer(lines[i])))
        new = '"' + choices.text(names).replace('"', "").replace("\n", " ") + '"'
        lines[i] = lines[i][:match.start()] + new + lines[i][match.end():]
        return "\n".join(lines), f"line {i}: a name -> {new}"
    if edit == "drop_line":
        del lines[i]
    elif edit == "duplicate_line":
        lines.insert(i, lines[i])
    elif edit == "cut":
        return text[:choices.integer(0, len(text))], "text cut"
    else:
        lines.insert(i, choices.choice(("{", "}", "layer {", "layer { type: ", "input_dim: 1", "\x00")))
    return "\n".join(lines), f"line {i}: {edit}"


def mutate_caffemodel(choices: Choices, blob: bytes) -> tuple[bytes, str]:
    """Blob shapes and data lengths of a caffemodel, or its bytes cut."""
    if not blob or choices.integer(0, 7) == 0:
        cut = choices.integer(0, max(len(blob) - 1, 0))
        return blob[:cut], f"caffemodel cut at {cut}"
    net = _schema().NetParameter()
    try:
        net.ParseFromString(blob)
    except DecodeError:  # an earlier cut broke it: cut again
        return blob[:choices.integer(0, len(blob) - 1)], "caffemodel cut again"
    blobs = [b for layer in _layers(net) for b in layer.blobs]
    if not blobs:
        return net.SerializeToString(), "caffemodel without blobs"
    target = choices.choice(blobs)
    edit = choices.choice(("shape", "shape", "data_short", "data_long", "legacy", "double", "generic"))
    if edit == "shape" and len(target.shape.dim):
        i = choices.integer(0, len(target.shape.dim) - 1)
        target.shape.dim[i] = choices.choice((0, -1, 1, 2, 10**5, 2**40, target.shape.dim[i] + 1))
    elif edit == "data_short" and len(target.data):
        del target.data[choices.integer(0, len(target.data) - 1):]
    elif edit == "data_long":
        target.data.extend([float(choices.choice((0.0, float("nan"), 1e38)))] * choices.integer(1, 9))
    elif edit == "legacy":
        setattr(target, choices.choice(("num", "channels", "height", "width")), choices.choice((0, -1, 7, 2**31 - 1)))
    elif edit == "double":
        target.double_data.extend(list(target.data)[:choices.integer(0, len(target.data))])
    else:
        return net.SerializeToString(), f"caffemodel: {ProtoMutator(choices, []).mutate(net)}"
    return net.SerializeToString(), f"caffemodel blob: {edit}"


def mutate_caffe(choices: Choices, bundle: SeedBundle) -> Case:
    from ...importers.caffe import supported_layer_types

    seed_name = choices.choice(sorted(bundle.caffe_nets))
    seed = bundle.caffe_nets[seed_name]
    prototxt, caffemodel = seed.prototxt, seed.caffemodel
    descriptions = []
    for _ in range(choices.weighted([(6, 1), (3, 2), (1, 3)])):
        where = choices.weighted([(6, "net"), (2, "text"), (3, "caffemodel")])
        if where == "caffemodel":
            caffemodel, description = mutate_caffemodel(choices, caffemodel)
        elif where == "text":
            prototxt, description = mutate_text(choices, prototxt, [])
        else:
            prototxt, description = _mutate_net(choices, prototxt, tuple(supported_layer_types()))
        descriptions.append(description)
    info = {"seed": seed_name, "mutations": descriptions, "input_seed": choices.integer(0, 2**31),
            "with_caffemodel": bool(caffemodel) or choices.integer(0, 9) == 0}
    return Case("caffe", (prototxt.encode("utf-8", "surrogatepass"), caffemodel), info)


def _mutate_net(choices: Choices, prototxt: str, layer_types: tuple[str, ...]) -> tuple[str, str]:
    net = _schema().NetParameter()
    try:
        text_format.Parse(prototxt, net)
    except text_format.ParseError:  # an earlier text edit broke it: edit the text again
        return mutate_text(choices, prototxt, [])
    description = NetMutator(choices, net, layer_types).mutate()
    return text_format.MessageToString(net), description


@fuzz_target("caffe", "prototxt and caffemodel mutations; import, build, reload, execute", mutate_caffe)
def run_caffe_case(case: Case, run: CaseRun) -> None:
    from ...builder import Builder
    from ...importers.caffe import parse_caffe

    run.scratch.mkdir(parents=True, exist_ok=True)
    deploy, model = run.scratch / "deploy.prototxt", run.scratch / "net.caffemodel"
    deploy.write_bytes(case.parts[0])
    model.write_bytes(case.parts[1])
    run.stage = "parse"
    network = parse_caffe(deploy, model if case.info.get("with_caffemodel", True) else None)
    run.stage = "build"
    engine = reload(Builder().build(network), run)
    run_engine(engine, run, case.info.get("input_seed", 0))

