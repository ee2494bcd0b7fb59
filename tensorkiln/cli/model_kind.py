"""Recognising a Caffe file given where `kiln build` expects an ONNX model, to say how to give it instead.

A deploy.prototxt is text and a .caffemodel a protobuf of another schema; either read as ONNX fails with a
message about protobuf that does not say what to do. The suffix decides first; a text file that reads like a
Caffe net (its first statements are `name:`, `input:`, `layer {` ...) is recognised whatever its name."""
from __future__ import annotations

import re
from pathlib import Path

from .inputs import CommandLineError

PROTOTXT_SUFFIXES = (".prototxt", ".pbtxt")
SNIFF_BYTES = 4096
# A statement that opens a Caffe NetParameter in text form, at the start of a line.
CAFFE_STATEMENT = re.compile(r"^\s*(name|input|input_dim|input_shape|layers?|force_backward|state)\s*[:{]",
                             re.MULTILINE)


def check_not_caffe(model: Path) -> None:
    """Raise a CommandLineError naming the right flags when `model` is a Caffe prototxt or caffemodel."""
    if model.suffix.lower() == ".caffemodel":
        deploy = _sibling(model, PROTOTXT_SUFFIXES) or "NET.prototxt"
        raise CommandLineError(f"{model} is a Caffe model's weights, not an ONNX model; build the net with "
                               f"`kiln build --deploy {deploy} --model {model}`")
    if model.suffix.lower() in PROTOTXT_SUFFIXES or _reads_like_prototxt(model):
        weights = _sibling(model, (".caffemodel",)) or "NET.caffemodel"
        raise CommandLineError(f"{model} is a Caffe net definition (prototxt), not an ONNX model; build it with "
                               f"`kiln build --deploy {model} --model {weights}` (the net and its trained weights)")


def _reads_like_prototxt(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError:
        return False  # the importer reports a missing or unreadable file in its own words
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False  # ONNX files are binary protobuf; decoding fails on them almost at once
    return CAFFE_STATEMENT.search(text) is not None


def _sibling(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The one file beside `path` with one of `suffixes`, if there is exactly one: the user's likely partner."""
    try:
        found = sorted(p for p in path.parent.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    except OSError:
        return None
    return str(found[0]) if len(found) == 1 else None


def parse_other_kind(model: Path, shapes: dict | None):
    """The network of a TFLite file or a TensorFlow model (SavedModel directory, .keras/.h5, frozen .pb), or None
    where `model` is neither (an ONNX model, then). TFLite is recognised by its flatbuffer identifier too."""
    from ..importers.tensorflow import is_tensorflow_model

    if model.suffix.lower() == ".tflite" or _has_tflite_identifier(model):
        from ..importers.tflite import parse_tflite

        return parse_tflite(model, input_shapes=shapes or None)
    if is_tensorflow_model(model):
        from ..importers.tensorflow import parse_tensorflow

        return parse_tensorflow(model, input_shapes=shapes or None)
    return None


def _has_tflite_identifier(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(8)[4:8] == b"TFL3"
    except OSError:
        return False
