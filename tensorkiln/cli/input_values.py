"""`kiln build --input-values NAME:FILE.npy|NAME:VALUE[,NAME:...]`: values of graph inputs fixed at build time.

Some inputs select shapes or branches (a sample rate that picks a branch of an If, axes, pads, sizes fed as
inputs); an engine needs them known when it is built, like TensorRT's shape tensors. They then become constants
and the engine no longer takes them (parse_onnx's `input_values=`).

A VALUE is a number (`sr:16000`) or a list (`axes:0,1` or `axes:0x1`), converted to the dtype the model declares
for that input; a FILE.npy is read with allow_pickle=False. An item without a colon continues the list of the
item before it, so `axes:0,1,sr:16000` gives axes [0, 1] and sr 16000.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import InputError
from ..limits import ResourceLimits
from .inputs import CommandLineError, check_declared_sizes, format_dims

TRUE_WORDS, FALSE_WORDS = ("true", "1"), ("false", "0")


def declared_inputs(model_path: Path) -> dict[str, tuple[np.dtype | None, tuple[int | None, ...] | None]]:
    """{input name: (numpy dtype, shape)} of an ONNX model's graph inputs that are not initializers: the shape
    has None for a dynamic dimension, and is None where the model declares none. Read without external data
    (only the graph's declarations are needed)."""
    import onnx

    from ..importers.onnx.parser import load_model

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # a missing, truncated or foreign file: the importer says what is wrong, in its words
        load_model(model_path)
        raise
    initializers = {tensor.name for tensor in model.graph.initializer}
    declared = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        shape = (tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
                 if tensor_type.HasField("shape") else None)
        declared[value.name] = dtype, shape
    return declared


def parse_input_values(text: str | None, declared: Mapping[str, tuple[np.dtype | None, tuple | None]],
                       limits: ResourceLimits | None = None) -> dict[str, np.ndarray]:
    """`sr:16000,axes:0,1,w:weights.npy` -> {"sr": array(16000), "axes": array([0, 1]), "w": <weights.npy>},
    each as the dtype and (where it is known) the shape the model declares. A .npy whose header declares an
    array past `limits` is refused before it is read."""
    values: dict[str, np.ndarray] = {}
    for name, value_text in _split_items(text or "", declared):
        if name in values:
            raise CommandLineError(f"--input-values gives input {name!r} twice")
        dtype, shape = declared[name]
        if value_text.endswith(".npy"):
            values[name] = _from_file(name, Path(value_text), dtype, limits or ResourceLimits())
        else:
            values[name] = _from_text(name, value_text, dtype)
        values[name] = _conform_shape(name, values[name], shape)
    return values


def _split_items(text: str, declared: Mapping) -> list[tuple[str, str]]:
    """(name, value text) pairs. A name is matched against the model's inputs (longest first), so that names
    and file paths may hold colons; an item without one continues the previous item's list."""
    pairs: list[list[str]] = []
    names = sorted(declared, key=len, reverse=True)
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name = next((n for n in names if item.startswith(n + ":")), None)
        if name is not None:
            pairs.append([name, item[len(name) + 1:]])
        elif ":" not in item and pairs and not pairs[-1][1].endswith(".npy"):
            pairs[-1][1] += "," + item
        else:
            asked = item.rpartition(":")[0] if ":" in item else item
            raise CommandLineError(f"--input-values item {item!r}: {asked!r} is not an input of the model; write "
                                   f"NAME:VALUE or NAME:FILE.npy with NAME one of {sorted(declared)}")
    return [(name, value) for name, value in pairs]


def _from_file(name: str, path: Path, dtype: np.dtype | None, limits: ResourceLimits) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"--input-values {name}: file {str(path)!r} does not exist")
    check_declared_sizes(path, limits)
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle: an input file must not run code
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"--input-values {name}: cannot read {str(path)!r} as .npy: {error}") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"--input-values {name}: {str(path)!r} holds several arrays; give a .npy of one")
    if dtype is None or array.dtype == dtype:
        return array
    if array.dtype.kind != dtype.kind and not (array.dtype.kind in "iu" and dtype.kind in "iu"):
        raise InputError(f"--input-values {name}: {str(path)!r} has dtype {array.dtype}, but the model declares "
                         f"{dtype}; save it as {dtype} (array.astype('{dtype}'))")
    return _cast(name, array, dtype)


def _from_text(name: str, text: str, dtype: np.dtype | None) -> np.ndarray:
    words = [w for w in text.replace("x", ",").replace("X", ",").split(",")] if text else []
    if not words or any(not w.strip() for w in words):
        raise CommandLineError(f"--input-values {name}:{text}: write a number (sr:16000), a list (axes:0,1 or "
                               "axes:0x1), or a .npy file")
    numbers = [_number(name, word.strip(), dtype) for word in words]
    array = np.array(numbers if len(numbers) > 1 or "," in text or "x" in text.lower() else numbers[0])
    return _cast(name, array, dtype if dtype is not None else array.dtype)


def _number(name: str, word: str, dtype: np.dtype | None):
    kind = dtype.kind if dtype is not None else "f"
    try:
        if kind == "b":
            if word.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError
            return word.lower() in TRUE_WORDS
        if kind in "iu":
            return int(word)
        return float(word) if kind in "fc" else int(word)
    except ValueError:
        what = {"b": "a boolean (true/false)", "i": "an integer", "u": "an integer"}.get(kind, "a number")
        raise CommandLineError(f"--input-values {name}: {word!r} is not {what}, as the model's input "
                               f"{name!r} ({dtype}) needs") from None


def _cast(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise CommandLineError(f"--input-values {name}: values outside the range of {dtype}, the model's "
                                   f"dtype for it ({info.min} to {info.max})")
    return np.ascontiguousarray(array.astype(dtype))


def _conform_shape(name: str, array: np.ndarray, shape: tuple | None) -> np.ndarray:
    """The array in the model's declared shape: it must match where the model declares sizes; a number or a
    list may also fill a declared shape of as many elements (16000 for a declared (1,))."""
    if shape is None or len(shape) == array.ndim and all(d is None or d == s for d, s in zip(shape, array.shape)):
        return array
    if None not in shape and array.ndim <= 1 and array.size == int(np.prod(shape, dtype=np.int64)):
        return array.reshape(shape)
    declared = "x".join("?" if d is None else str(d) for d in shape) or "scalar"
    raise InputError(f"--input-values {name}: shape {format_dims(array.shape) or 'scalar'} does not match the "
                     f"model's declared {declared}")
