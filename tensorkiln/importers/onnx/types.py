"""ONNX element types <-> tensorkiln DataType."""
from __future__ import annotations

import onnx

from ...errors import ModelFormatError
from ...ir.dtypes import DataType

_ONNX_TO_DATATYPE = {
    onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF,
    onnx.TensorProto.BFLOAT16: DataType.BF16, onnx.TensorProto.DOUBLE: DataType.DOUBLE,
    onnx.TensorProto.INT8: DataType.INT8, onnx.TensorProto.UINT8: DataType.UINT8,
    onnx.TensorProto.INT16: DataType.INT16, onnx.TensorProto.INT32: DataType.INT32,
    onnx.TensorProto.INT64: DataType.INT64, onnx.TensorProto.BOOL: DataType.BOOL,
}


def onnx_to_datatype(elem_type: int, where: str) -> DataType:
    try:
        return _ONNX_TO_DATATYPE[elem_type]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else elem_type
        raise ModelFormatError(f"{where} has element type {name}, which tensorkiln does not support; supported: "
                               f"{sorted(d.value for d in _ONNX_TO_DATATYPE.values())}") from None
