"""Reading a TFLite flatbuffer (through the `tflite` package, generated from TensorFlow's schema.fbs) into plain
records: tensors with their shapes, dtypes, constant data and quantization, and operators with their decoded
options. Nothing here knows about the IR; parser.py and the converters do."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ...errors import ModelFormatError

FILE_IDENTIFIER = b"TFL3"
ModelSource = str | Path | bytes


def _tflite():
    try:
        import tflite
    except ImportError:
        raise ModelFormatError("reading .tflite files needs the `tflite` package (TensorFlow's flatbuffer schema): "
                               "pip install tflite (a dependency of tensorkiln)") from None
    return tflite


@dataclasses.dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = (q - zero_point) * scale, per tensor or per `axis` channel."""
    scale: np.ndarray  # float32, one value or one per channel
    zero_point: np.ndarray  # int64, as many as scale
    axis: int

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        shape = [1] * values.ndim
        if self.per_channel:
            shape[self.axis] = -1
        scale, zero = self.scale.reshape(shape or ()), self.zero_point.reshape(shape or ())
        return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TensorRecord:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None  # the constant's value (as stored: quantized integers stay integers), else None
    quantization: Quantization | None
    is_variable: bool = False
    # the shape with -1 where the dim is only known at run time (the stored shape then holds a placeholder)
    shape_signature: tuple[int, ...] | None = None

    def agrees_with(self, shape) -> bool:
        """Whether `shape` fits the model's shape for this tensor (run-time dims match anything)."""
        known = self.shape_signature if self.shape_signature is not None else self.shape
        return len(known) == len(shape) and all(k < 0 or k == d for k, d in zip(known, shape))

    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None and self.dtype.kind in "iu"


@dataclasses.dataclass(frozen=True)
class OperatorRecord:
    index: int
    subgraph: int
    op_name: str  # BuiltinOperator name ("CONV_2D"), or "CUSTOM"
    custom_code: str  # the custom op's name; "" for builtins
    version: int
    inputs: tuple[int, ...]  # tensor indices; -1 for an omitted optional input
    outputs: tuple[int, ...]
    options: object | None  # the decoded *Options table (tflite.Conv2DOptions, ...), None where it has none
    custom_options: bytes = b""

    @property
    def type_name(self) -> str:
        """What the op is called: the builtin's name or the custom op's code."""
        return self.custom_code if self.op_name == "CUSTOM" else self.op_name

    def describe(self) -> str:
        return f"TFLite operator {self.index} ({self.type_name}, version {self.version}) of subgraph {self.subgraph}"


@dataclasses.dataclass(frozen=True)
class SubgraphRecord:
    index: int
    name: str
    tensors: tuple[TensorRecord, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: tuple[OperatorRecord, ...]


@dataclasses.dataclass(frozen=True)
class TFLiteModel:
    version: int
    description: str
    subgraphs: tuple[SubgraphRecord, ...]
    # the first signature's names for the main subgraph's inputs and outputs (tensor index -> name), as
    # tf.lite.Interpreter's signature runner calls them
    signature_names: dict[int, str]


def _tensor_dtypes() -> dict[int, np.dtype]:
    t = _tflite().TensorType
    table = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8, "UINT8": np.uint8,
             "INT16": np.int16, "UINT16": np.uint16, "INT32": np.int32, "UINT32": np.uint32, "INT64": np.int64,
             "UINT64": np.uint64, "BOOL": np.bool_}
    return {getattr(t, name): np.dtype(dtype) for name, dtype in table.items() if hasattr(t, name)}


def _type_names() -> dict[int, str]:
    t = _tflite().TensorType
    return {value: name for name, value in vars(t).items() if not name.startswith("_") and isinstance(value, int)}


def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items()
            if not name.startswith("_") and isinstance(value, int)}


def load_tflite(source: ModelSource) -> TFLiteModel:
    """Read a .tflite file (path or bytes), turning flatbuffer errors into one clear ModelFormatError."""
    what = "TFLite model bytes" if isinstance(source, bytes) else f"TFLite file {str(source)!r}"
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise ModelFormatError(f"{what} cannot be read: {error.strerror or error}") from None
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelFormatError(f"{what} is not a TFLite flatbuffer (its identifier is not {FILE_IDENTIFIER!r}); "
                               "give a .tflite file written by TensorFlow's TFLiteConverter")
    tflite = _tflite()
    try:
        root = tflite.Model.GetRootAs(data, 0)
        return _read_model(tflite, root, data)
    except ModelFormatError:
        raise
    except Exception as error:  # flatbuffer offsets out of range: a truncated or corrupt file
        raise ModelFormatError(f"{what} is not a valid TFLite model (truncated or corrupt?): "
                               f"{type(error).__name__}: {error}") from None


def _read_model(tflite, root, data: bytes) -> TFLiteModel:
    op_names = _enum_names(tflite.BuiltinOperator)
    option_names = _enum_names(tflite.BuiltinOptions)
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        # the builtin code moved to a 32-bit field; old files only fill the deprecated 8-bit one
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append((op_names.get(builtin, f"BUILTIN_{builtin}"), custom.decode() if custom else "",
                      code.Version()))
    buffers = [_buffer_bytes(root.Buffers(i), data) for i in range(root.BuffersLength())]
    subgraphs = tuple(_read_subgraph(tflite, root.Subgraphs(s), s, codes, buffers, option_names)
                      for s in range(root.SubgraphsLength()))
    if not subgraphs:
        raise ModelFormatError("the TFLite model has no subgraph (truncated or corrupt?)")
    description = root.Description()
    return TFLiteModel(root.Version(), description.decode() if description else "", subgraphs,
                       _signature_names(root))


def _buffer_bytes(buffer, data: bytes) -> bytes:
    if buffer is None:
        return b""
    offset = buffer.Offset()
    if offset > 1:  # models over 2 GB keep their buffers after the flatbuffer, addressed by offset and size
        size = buffer.Size()
        if offset + size > len(data):
            raise ModelFormatError(f"a TFLite buffer lies past the end of the file (offset {offset}, size {size}): "
                                   "the file is truncated")
        return data[offset:offset + size]
    if buffer.DataIsNone():
        return b""
    return buffer.DataAsNumpy().tobytes()


def _read_subgraph(tflite, graph, index, codes, buffers, option_names) -> SubgraphRecord:
    dtypes, type_names = _tensor_dtypes(), _type_names()
    tensors = []
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        name = tensor.Name().decode() if tensor.Name() else f"tensor_{t}"
        kind = tensor.Type()
        if kind not in dtypes:
            raise ModelFormatError(f"tensor {name!r} of subgraph {index} has element type "
                                   f"{type_names.get(kind, kind)}, which tensorkiln does not support")
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if not tensor.ShapeIsNone() else ()
        raw = buffers[tensor.Buffer()] if 0 < tensor.Buffer() < len(buffers) else b""
        dtype = dtypes[kind]
        array = None
        if raw:
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if len(raw) != expected:
                raise ModelFormatError(f"constant tensor {name!r} of subgraph {index} holds {len(raw)} bytes; its "
                                       f"shape {shape} and type {dtype} need {expected} (corrupt file?)")
            array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        signature = (tuple(int(d) for d in tensor.ShapeSignatureAsNumpy())
                     if not tensor.ShapeSignatureIsNone() else None)
        tensors.append(TensorRecord(t, name, shape, dtype, array, _quantization(tensor.Quantization()),
                                    bool(tensor.IsVariable()), signature))
    operators = []
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        op_name, custom, version = codes[op.OpcodeIndex()]
        custom_options = op.CustomOptionsAsNumpy().tobytes() if not op.CustomOptionsIsNone() else b""
        operators.append(OperatorRecord(
            o, index, op_name, custom, version, tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else (),
            tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else (),
            _options(tflite, op, option_names), custom_options))
    name = graph.Name().decode() if graph.Name() else f"subgraph_{index}"
    return SubgraphRecord(index, name, tuple(tensors),
                          tuple(int(i) for i in graph.InputsAsNumpy()) if graph.InputsLength() else (),
                          tuple(int(i) for i in graph.OutputsAsNumpy()) if graph.OutputsLength() else (),
                          tuple(operators))


def _quantization(params) -> Quantization | None:
    if params is None or params.ScaleIsNone() or params.ScaleLength() == 0:
        return None
    scale = params.ScaleAsNumpy().astype(np.float32)
    zero = params.ZeroPointAsNumpy().astype(np.int64) if not params.ZeroPointIsNone() else np.zeros(scale.size,
                                                                                                    np.int64)
    if zero.size != scale.size:
        zero = np.broadcast_to(zero, scale.shape).copy()
    return Quantization(scale, zero, int(params.QuantizedDimension()))


def _options(tflite, op, option_names):
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if not kind or table is None:
        return None
    cls = getattr(tflite, option_names.get(kind, ""), None)
    if cls is None:
        return None
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


def _signature_names(root) -> dict[int, str]:
    if root.SignatureDefsLength() != 1:
        return {}  # several signatures (or none): the tensors' own names are the only unambiguous ones
    signature = root.SignatureDefs(0)
    if signature.SubgraphIndex() != 0:
        return {}
    names = {}
    for maps, length in ((signature.Inputs, signature.InputsLength()), (signature.Outputs, signature.OutputsLength())):
        for i in range(length):
            entry = maps(i)
            names[int(entry.TensorIndex())] = entry.Name().decode()
    return names if len(set(names.values())) == len(names) else {}
