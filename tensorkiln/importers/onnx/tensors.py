"""ONNX tensors (initializers, Constant values, tensor attributes) as numpy arrays, checked before anything is read.

A TensorProto is data from a file, so it is treated as hostile: its element type must be one tensorkiln holds, its
dims non-negative, the bytes or values it stores exactly what its dims need, and external data must lie inside the
model's folder (checked before the file is opened, so a model cannot make tensorkiln read `../../etc/passwd`).

FP8 tensors (the float8 types of FP8 Q/DQ models) are widened to float32 holding the same values: tensorkiln has no
float8 type, and every FP8 value is exactly a float32 one, so dequantizing them gives the same results.
"""
from __future__ import annotations

import math
import os
from pathlib import Path, PureWindowsPath
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ...errors import ModelFormatError
from .types import onnx_to_datatype

FP8_TYPES = {TensorProto.FLOAT8E4M3FN: "float8_e4m3fn", TensorProto.FLOAT8E4M3FNUZ: "float8_e4m3fnuz",
             TensorProto.FLOAT8E5M2: "float8_e5m2", TensorProto.FLOAT8E5M2FNUZ: "float8_e5m2fnuz"}

# the repeated field that holds a tensor's values when it has no raw_data (onnx.proto's TensorProto comments)
_VALUE_FIELDS = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data", TensorProto.INT64: "int64_data",
    TensorProto.INT32: "int32_data", TensorProto.INT16: "int32_data", TensorProto.INT8: "int32_data",
    TensorProto.UINT8: "int32_data", TensorProto.BOOL: "int32_data", TensorProto.FLOAT16: "int32_data",
    TensorProto.BFLOAT16: "int32_data", **{fp8: "int32_data" for fp8 in FP8_TYPES},
}


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else str(elem_type)


def tensor_to_array(tensor: TensorProto, where: str) -> np.ndarray:
    """The values of `tensor` (described by `where`, e.g. "initializer 'w'"), checked against its dims first.

    FP8 tensors come back as float32 arrays of the same values."""
    _check_element_type(tensor, where)
    if tensor.data_location == TensorProto.EXTERNAL:
        raise ModelFormatError(f"{where} keeps its data in an external file, which was not loaded; pass the model "
                               "by its path (parse_onnx('model.onnx')) so that tensorkiln reads the data from the "
                               "model's folder")
    if tensor.HasField("segment"):
        raise ModelFormatError(f"{where} is a segment of a larger tensor; tensorkiln reads whole tensors only: "
                               "re-save the model with onnx.save")
    count = element_count(tensor, where)
    if tensor.HasField("raw_data"):
        needed = count * _itemsize(tensor.data_type)
        if len(tensor.raw_data) != needed:
            raise ModelFormatError(f"{where} has dims {list(tensor.dims)} ({type_name(tensor.data_type)}), which "
                                   f"need {needed} bytes, but its raw_data holds {len(tensor.raw_data)}; the model "
                                   "is corrupted or truncated: re-export it")
    else:
        stored = len(getattr(tensor, _VALUE_FIELDS[tensor.data_type]))
        if stored != count:
            raise ModelFormatError(f"{where} has dims {list(tensor.dims)}, which need {count} values, but it holds "
                                   f"{stored}; the model is corrupted or truncated: re-export it")
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:  # anything the checks above did not foresee
        raise ModelFormatError(f"{where} cannot be read: {error}; re-export the model") from None
    return array.astype(np.float32) if tensor.data_type in FP8_TYPES else array


def element_count(tensor: TensorProto, where: str) -> int:
    if any(d < 0 for d in tensor.dims):
        raise ModelFormatError(f"{where} has a negative dimension in {list(tensor.dims)}; the model is corrupted")
    return math.prod(int(d) for d in tensor.dims)


def _check_element_type(tensor: TensorProto, where: str) -> None:
    if tensor.data_type in FP8_TYPES:
        return
    if tensor.data_type == TensorProto.UNDEFINED:
        raise ModelFormatError(f"{where} has no element type (data_type is unset); the model is corrupted")
    onnx_to_datatype(tensor.data_type, where)  # raises for the types tensorkiln does not hold


def _itemsize(elem_type: int) -> int:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize


# ---- external data ------------------------------------------------------------------------------------------------
def load_external_data(model: onnx.ModelProto, base_dir: Path | None, what: str) -> None:
    """Read every tensor's external data into it (as raw_data), each file checked to lie inside `base_dir` (the
    model's folder) and each piece checked to have the size the tensor's dims need, before anything is read."""
    for tensor, where in _tensors_of(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        if base_dir is None:
            raise ModelFormatError(f"{what}: {where} keeps its data in an external file, which cannot be found from "
                                   "bytes or a ModelProto; pass the model by its path (parse_onnx('model.onnx'))")
        _check_element_type(tensor, where)
        fields = {entry.key: entry.value for entry in tensor.external_data}
        path = _external_path(fields.get("location", ""), base_dir, where)
        offset, length = _int_field(fields, "offset", 0, where), _int_field(fields, "length", None, where)
        size = path.stat().st_size
        needed = element_count(tensor, where) * _itemsize(tensor.data_type)
        length = size - offset if length is None else length
        if length != needed or offset + length > size:
            raise ModelFormatError(f"{where} has dims {list(tensor.dims)} ({type_name(tensor.data_type)}), which need "
                                   f"{needed} bytes, but its external data is {length} bytes at offset {offset} of "
                                   f"{str(path)!r} ({size} bytes); the data file does not belong to this model or "
                                   "is truncated")
        with open(path, "rb") as data_file:
            data_file.seek(offset)
            tensor.raw_data = data_file.read(length)
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]


def _external_path(location: str, base_dir: Path, where: str) -> Path:
    """The data file of `location`, which must name a file inside `base_dir` (symbolic links resolved)."""
    if not location:
        raise ModelFormatError(f"{where} keeps its data in an external file but names none (no 'location')")
    outside = ModelFormatError(f"{where} keeps its data in {location!r}, which is outside the model's folder "
                               f"{str(base_dir)!r}; external data must lie in the model's folder or below it: "
                               "move the data file there and re-save the model with a relative location")
    if os.path.isabs(location) or PureWindowsPath(location).drive or "\0" in location:
        raise outside
    base = base_dir.resolve()
    path = (base / location).resolve()
    if not path.is_relative_to(base):
        raise outside
    if not path.is_file():
        raise ModelFormatError(f"{where} keeps its data in {location!r}, which does not exist in {str(base)!r}; copy "
                               "the model's data file next to it")
    return path


def _int_field(fields: dict[str, str], key: str, default: int | None, where: str) -> int | None:
    if key not in fields:
        return default
    try:
        value = int(fields[key])
    except ValueError:
        value = -1
    if value < 0:
        raise ModelFormatError(f"{where}: external data {key} {fields[key]!r} is not a non-negative integer")
    return value


def _tensors_of(graph: onnx.GraphProto, scope: str = "") -> Iterator[tuple[TensorProto, str]]:
    """Every tensor of a graph and its subgraphs: initializers and tensor attributes, each with a description."""
    for initializer in graph.initializer:
        yield initializer, f"initializer {initializer.name!r}{scope}"
    for node in graph.node:
        node_name = node.name or node.op_type
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t, f"attribute {attribute.name!r} of node {node_name!r}{scope}"
            for tensor in attribute.tensors:
                yield tensor, f"attribute {attribute.name!r} of node {node_name!r}{scope}"
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _tensors_of(subgraph, f" (in the subgraph of node {node_name!r})")
