"""Reading Caffe files: prototxt (text NetParameter) and caffemodel (binary NetParameter), and their weights.

Both layouts of a Caffe net are read as they are, without upgrading: V2 (`net.layer`, LayerParameter with a
string type, Caffe since 2015) and V1 (`net.layers`, V1LayerParameter with an enum type). `layer_type_name`
gives every layer its V2 type name, the first step of the V1 -> V2 upgrade the Caffe importer performs.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
from google.protobuf import message as protobuf_message
from google.protobuf import text_format

from ...errors import ModelFormatError
from .schema import caffe_pb2

AnyLayer = caffe_pb2.LayerParameter | caffe_pb2.V1LayerParameter

_V1 = caffe_pb2.V1LayerParameter
# V1 enum type -> V2 type name, as Caffe's UpgradeV1LayerType (src/caffe/util/upgrade_proto.cpp) maps them
V1_TYPE_NAMES: dict[int, str] = {
    _V1.ABSVAL: "AbsVal", _V1.ACCURACY: "Accuracy", _V1.ARGMAX: "ArgMax", _V1.BNLL: "BNLL",
    _V1.CONCAT: "Concat", _V1.CONTRASTIVE_LOSS: "ContrastiveLoss", _V1.CONVOLUTION: "Convolution",
    _V1.DECONVOLUTION: "Deconvolution", _V1.DATA: "Data", _V1.DROPOUT: "Dropout", _V1.DUMMY_DATA: "DummyData",
    _V1.EUCLIDEAN_LOSS: "EuclideanLoss", _V1.ELTWISE: "Eltwise", _V1.EXP: "Exp", _V1.FLATTEN: "Flatten",
    _V1.HDF5_DATA: "HDF5Data", _V1.HDF5_OUTPUT: "HDF5Output", _V1.HINGE_LOSS: "HingeLoss", _V1.IM2COL: "Im2col",
    _V1.IMAGE_DATA: "ImageData", _V1.INFOGAIN_LOSS: "InfogainLoss", _V1.INNER_PRODUCT: "InnerProduct",
    _V1.LRN: "LRN", _V1.MEMORY_DATA: "MemoryData", _V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    _V1.MVN: "MVN", _V1.POOLING: "Pooling", _V1.POWER: "Power", _V1.RELU: "ReLU", _V1.SIGMOID: "Sigmoid",
    _V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", _V1.SILENCE: "Silence", _V1.SOFTMAX: "Softmax",
    _V1.SOFTMAX_LOSS: "SoftmaxWithLoss", _V1.SPLIT: "Split", _V1.SLICE: "Slice", _V1.TANH: "TanH",
    _V1.WINDOW_DATA: "WindowData", _V1.THRESHOLD: "Threshold",
}
# V0 string type (a V0 layer nested in a V1 layer, models from before 2014) -> V2 type name, as Caffe's
# UpgradeV0LayerType; V0 "padding" layers are folded into the next convolution by the upgrade, not here
V0_TYPE_NAMES: dict[str, str] = {
    "accuracy": "Accuracy", "bnll": "BNLL", "concat": "Concat", "conv": "Convolution", "data": "Data",
    "dropout": "Dropout", "euclidean_loss": "EuclideanLoss", "flatten": "Flatten", "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output", "im2col": "Im2col", "images": "ImageData", "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct", "lrn": "LRN", "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling", "relu": "ReLU", "sigmoid": "Sigmoid", "softmax": "Softmax", "softmax_loss": "SoftmaxWithLoss",
    "split": "Split", "tanh": "TanH", "window_data": "WindowData", "padding": "Padding",
}

_TEXT_ERROR_POSITION = re.compile(r"^\d+:\d+\s*:\s*")


# ---- files ---------------------------------------------------------------------------------------------------
def read_prototxt(path: str | Path, allow_unknown_fields: bool = False) -> caffe_pb2.NetParameter:
    """Parse a text prototxt (deploy or train/val net) into a NetParameter.

    `allow_unknown_fields` skips fields this schema does not declare (parameters of layers from Caffe forks)
    instead of failing; it stays off by default because it also hides misspelled field names.
    """
    path = Path(path)
    text = _read_bytes(path, "prototxt").decode("utf-8", errors="replace")
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=allow_unknown_fields)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        where = f"line {line}, column {column}" if line is not None else "an unknown position"
        reason = _TEXT_ERROR_POSITION.sub("", str(error))
        raise ModelFormatError(f"prototxt {str(path)!r} is not a valid Caffe net: error at {where}: {reason}"
                               ) from None
    return net


def read_caffemodel(path: str | Path) -> caffe_pb2.NetParameter:
    """Parse a binary caffemodel (a NetParameter whose layers carry their blobs)."""
    path = Path(path)
    data = _read_bytes(path, "caffemodel")
    net = caffe_pb2.NetParameter()
    hint = ""
    if data.lstrip()[:5] in (b"name:", b"input", b"layer") or data.lstrip()[:1] == b"#":
        hint = "; it looks like a text prototxt: read it with read_prototxt"
    try:
        net.ParseFromString(data)
    except protobuf_message.DecodeError as error:
        raise ModelFormatError(f"caffemodel {str(path)!r} ({len(data)} bytes) cannot be decoded: {error}; the file "
                               f"is truncated, corrupted, or not a caffemodel{hint}") from None
    if not net.layer and not net.layers:
        raise ModelFormatError(f"caffemodel {str(path)!r} ({len(data)} bytes) holds no layers; it is empty, "
                               f"truncated, or not a caffemodel{hint}")
    return net


def _read_bytes(path: Path, kind: str) -> bytes:
    if not path.is_file():
        raise ModelFormatError(f"{kind} file {str(path)!r} does not exist")
    return path.read_bytes()


# ---- weights -------------------------------------------------------------------------------------------------
def blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The blob's shape: `shape` if set, else the legacy (num, channels, height, width), else its flat size."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    # Caffe's Blob::FromProto: any legacy dim set means all four count (unset ones are 0)
    if any(blob.HasField(name) for name in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return (len(blob.double_data) or len(blob.data),)


def blob_to_array(blob: caffe_pb2.BlobProto) -> np.ndarray:
    """The blob's values as a float32 array of the blob's shape (double_data is narrowed to float32)."""
    values = blob.double_data if len(blob.double_data) else blob.data
    array = np.asarray(values, dtype=np.float32)
    shape = blob_shape(blob)
    if any(d < 0 for d in shape):  # numpy would read one -1 as "infer it" and refuse two with a ValueError
        raise ModelFormatError(f"blob of shape {shape} has a negative dimension; the file is corrupted")
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise ModelFormatError(f"blob of shape {shape} holds {array.size} values; the file is corrupted "
                               "or the blob was saved without data")
    return array.reshape(shape)


def iter_layers(net: caffe_pb2.NetParameter) -> Iterator[AnyLayer]:
    """The layers of a V2 net (`layer`) or a V1 net (`layers`); Caffe refuses nets that have both."""
    if net.layer and net.layers:
        raise ModelFormatError(f"net {net.name!r} has both V2 layers ('layer') and V1 layers ('layers'); "
                               "Caffe accepts one kind per file")
    yield from (net.layer or net.layers)


def layer_name(layer: AnyLayer) -> str:
    if isinstance(layer, caffe_pb2.V1LayerParameter) and not layer.name and layer.HasField("layer"):
        return layer.layer.name  # V0 layer nested in a V1 layer
    return layer.name


def layer_type_name(layer: AnyLayer) -> str:
    """The V2 type name of a layer ("Convolution", "InnerProduct", ...), whatever the layout it comes in."""
    if isinstance(layer, caffe_pb2.LayerParameter):
        return layer.type
    if layer.type != _V1.NONE:
        return V1_TYPE_NAMES[layer.type]
    if layer.HasField("layer"):
        v0_type = layer.layer.type
        if v0_type in V0_TYPE_NAMES:
            return V0_TYPE_NAMES[v0_type]
        raise ModelFormatError(f"V0 layer {layer_name(layer)!r} has the unknown type {v0_type!r}")
    raise ModelFormatError(f"V1 layer {layer_name(layer)!r} has no type, or a type number this schema does not "
                           "know (a layer added by a Caffe fork); upgrade the net to V2 with the "
                           "upgrade_net_proto_text / upgrade_net_proto_binary tool of the Caffe that wrote it")


def layer_blobs(net: caffe_pb2.NetParameter) -> dict[str, list[np.ndarray]]:
    """{layer name: its blobs as float32 arrays} for every layer that has blobs, for V1 and V2 nets alike.

    Where two layers share a name, the later one wins, as Caffe's Net::CopyTrainedLayersFrom copies them.
    """
    blobs: dict[str, list[np.ndarray]] = {}
    for layer in iter_layers(net):
        layer_blob_protos = layer.blobs
        if not layer_blob_protos and isinstance(layer, caffe_pb2.V1LayerParameter) and layer.HasField("layer"):
            layer_blob_protos = layer.layer.blobs  # V0 layer nested in a V1 layer
        if layer_blob_protos:
            name = layer_name(layer)
            try:
                blobs[name] = [blob_to_array(blob) for blob in layer_blob_protos]
            except ModelFormatError as error:
                raise ModelFormatError(f"layer {name!r}: {error}") from None
    return blobs
