"""TensorFlow models (SavedModel directories, Keras .keras/.h5 files, frozen .pb graphs) through tf2onnx.

An optional extra (`pip install tensorkiln[tensorflow]`: tensorflow-cpu and tf2onnx), imported only when a
TensorFlow model is parsed. The model is converted to ONNX in memory and imported by the ONNX importer, so
every ONNX op tensorkiln converts is available; inputs and outputs are named as the model's serving
signature names them (a Keras model's input layer names), in TensorFlow's layout (NHWC for images).
TFLite flatbuffers do not need TensorFlow: see importers/tflite.

The conversion runs in a child process (`python -m tensorkiln.importers.tensorflow MODEL OUT.onnx OPSET`):
TensorFlow and Triton each bring their own LLVM, and loading both into one process aborts it ("LLVM ERROR:
inconsistency in registered CommandLine options"). This module imports nothing heavy at its top for that
reason: the child imports TensorFlow and tf2onnx, never torch or Triton."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ..errors import ModelFormatError

if TYPE_CHECKING:
    from ..network import NetworkDefinition

CONVERSION_TIMEOUT_S = 1800

DEFAULT_OPSET = 17
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
FROZEN_GRAPH_SUFFIXES = (".pb",)
INSTALL_HINT = "pip install tensorkiln[tensorflow]  (tensorflow-cpu and tf2onnx)"


def is_tensorflow_model(path: str | Path) -> bool:
    """A SavedModel directory, a Keras file or a frozen graph, by its name and (for directories) contents."""
    path = Path(path)
    if path.is_dir():
        return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()
    return path.suffix.lower() in KERAS_SUFFIXES + FROZEN_GRAPH_SUFFIXES


def _require():
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as error:
        raise ModelFormatError(f"importing TensorFlow models needs TensorFlow and tf2onnx ({error.name} is not "
                               f"installed): {INSTALL_HINT}. A .tflite file needs neither (parse_tflite).") from None
    return tf, tf2onnx


def tensorflow_available() -> bool:
    """Whether tensorflow and tf2onnx are installed (checked without importing them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tf2onnx"))


def tensorflow_to_onnx(path: str | Path, opset: int = DEFAULT_OPSET):
    """The model at `path` as an onnx.ModelProto, converted by tf2onnx in a child process."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"TensorFlow model {str(path)!r} does not exist")
    if not tensorflow_available():
        _require()  # raises the message naming the extra
    with tempfile.TemporaryDirectory(prefix="tensorkiln_tf2onnx_") as folder:
        target = Path(folder) / "model.onnx"
        command = [sys.executable, "-m", __name__, str(path), str(target), str(opset)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=CONVERSION_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ModelFormatError(f"converting {str(path)!r} with tf2onnx took over {CONVERSION_TIMEOUT_S} s; "
                                   "convert it yourself (python -m tf2onnx.convert) and build the .onnx") from None
        if done.returncode != 0 or not target.is_file():
            reason = _child_error(done.stderr)
            raise ModelFormatError(reason if reason else f"converting {str(path)!r} with tf2onnx failed "
                                   f"(exit status {done.returncode}): {done.stderr.strip()[-500:]}")
        return onnx.load(str(target))


def _child_error(stderr: str) -> str:
    for line in reversed(stderr.splitlines()):
        if line.startswith(_ERROR_PREFIX):
            return line[len(_ERROR_PREFIX):]
    return ""


_ERROR_PREFIX = "tensorkiln-error: "


def convert_in_this_process(path: str | Path, opset: int = DEFAULT_OPSET):
    """The model at `path` as an onnx.ModelProto (tf2onnx), its inputs and outputs named by the signature."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"TensorFlow model {str(path)!r} does not exist")
    tf, tf2onnx = _require()
    if path.is_dir():
        return _from_saved_model(tf2onnx, path, opset)
    if path.suffix.lower() in KERAS_SUFFIXES:
        return _from_keras(tf, tf2onnx, path, opset)
    if path.suffix.lower() in FROZEN_GRAPH_SUFFIXES:
        return _from_frozen_graph(tf, tf2onnx, path, opset)
    raise ModelFormatError(f"{str(path)!r} is not a TensorFlow model tensorkiln reads: give a SavedModel directory, "
                           "a Keras .keras/.h5 file or a frozen graph .pb")


def _from_saved_model(tf2onnx, path: Path, opset: int):
    from tf2onnx import tf_loader

    if not (path / "saved_model.pb").is_file():
        raise ModelFormatError(f"{str(path)!r} is a directory without saved_model.pb: not a SavedModel")
    try:
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            str(path), None, None, return_initialized_tables=True, return_tensors_to_rename=True)
    except Exception as error:  # TensorFlow's loader errors are long; the first line says what went wrong
        raise ModelFormatError(f"SavedModel {str(path)!r} could not be loaded: {_first_line(error)}") from None
    return _convert(tf2onnx, graph_def, inputs, outputs, opset, str(path), renames, tables)


def _from_keras(tf, tf2onnx, path: Path, opset: int):
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as error:
        raise ModelFormatError(f"Keras model {str(path)!r} could not be loaded: {_first_line(error)}") from None
    with tempfile.TemporaryDirectory(prefix="tensorkiln_keras_") as folder:
        # Keras 3 writes its serving function as a SavedModel; tf2onnx reads that form reliably
        export = getattr(model, "export", None)
        if export is not None:
            export(folder, verbose=False) if "verbose" in export.__code__.co_varnames else export(folder)
        else:
            tf.saved_model.save(model, folder)
        return _from_saved_model(tf2onnx, Path(folder), opset)


def _from_frozen_graph(tf, tf2onnx, path: Path, opset: int):
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:
        raise ModelFormatError(f"{str(path)!r} is not a frozen TensorFlow graph (GraphDef): "
                               f"{_first_line(error)}") from None
    consumed = {name.split(":")[0].lstrip("^") for node in graph_def.node for name in node.input}
    inputs = [f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder"]
    outputs = [f"{n.name}:0" for n in graph_def.node
               if n.name not in consumed and n.op not in ("Placeholder", "Const", "NoOp", "Assert")]
    if not inputs or not outputs:
        raise ModelFormatError(f"frozen graph {str(path)!r} has {len(inputs)} placeholder(s) and {len(outputs)} "
                               "unconsumed output(s); tensorkiln needs at least one of each")
    return _convert(tf2onnx, graph_def, inputs, outputs, opset, str(path), {}, None)


def _convert(tf2onnx, graph_def, inputs, outputs, opset, name, renames, tables):
    try:
        model, _ = tf2onnx.convert._convert_common(  # what `python -m tf2onnx.convert --saved-model` runs
            graph_def, name=name, opset=opset, input_names=inputs, output_names=outputs,
            tensors_to_rename=renames or None, initialized_tables=tables)
    except Exception as error:
        raise ModelFormatError(f"tf2onnx could not convert {name!r} to ONNX: {_first_line(error)}") from None
    return model


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def parse_tensorflow(path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None,
                     name: str | None = None, opset: int = DEFAULT_OPSET) -> NetworkDefinition:
    """Import a SavedModel directory, a Keras .keras/.h5 file or a frozen graph .pb (through tf2onnx).

    A dynamic batch dimension becomes 1 unless `input_shapes` gives another; see parse_onnx."""
    from .onnx import parse_onnx

    model = tensorflow_to_onnx(path, opset)
    return parse_onnx(model, input_shapes=input_shapes, name=name or Path(path).stem)


def _main(argv: list[str]) -> int:
    """The child process: convert argv[0] to ONNX at argv[1] (opset argv[2])."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter would bury an error
    source, target, opset = argv
    try:
        model = convert_in_this_process(source, int(opset))
    except ModelFormatError as error:
        print(_ERROR_PREFIX + str(error), file=sys.stderr)
        return 2
    import onnx

    onnx.save(model, target)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
