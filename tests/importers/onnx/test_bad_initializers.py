"""ONNX tensors are data from a file: an initializer (or a Constant's value) whose stored bytes disagree with its
dims, or whose external data lies outside the model's folder, is missing or is short, is one ModelFormatError line;
neither onnx's ValidationError nor numpy's reshape error escapes, and no file outside the folder is ever read."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from onnx_case import assert_close, run_onnxruntime
from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.onnx import parse_onnx

WEIGHT = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


def _model(weight: TensorProto, as_constant: bool = False) -> onnx.ModelProto:
    """y = x @ w, w an initializer (or the value of a Constant node)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    if as_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["w"], name="weights", value=weight))
    graph = helper.make_graph(nodes, "initializers", [x], [y], [] if as_constant else [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _weight(**changes) -> TensorProto:
    tensor = numpy_helper.from_array(WEIGHT, "w")
    for field, value in changes.items():
        if field == "dims":
            del tensor.dims[:]
            tensor.dims.extend(value)
        else:
            setattr(tensor, field, value)
    return tensor


def _assert_one_line(error: pytest.ExceptionInfo, *phrases: str) -> None:
    message = str(error.value)
    assert type(error.value).__module__.startswith("tensorkiln"), f"{type(error.value)} escaped: {message}"
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


@pytest.mark.parametrize("as_constant", [False, True], ids=["initializer", "constant_node"])
@pytest.mark.parametrize("changes, phrases", [
    ({"raw_data": WEIGHT.tobytes()[:-4]}, ["need 48 bytes", "raw_data holds 44"]),
    ({"raw_data": WEIGHT.tobytes() + b"\0" * 4}, ["need 48 bytes", "raw_data holds 52"]),
    ({"dims": [4, 4]}, ["dims [4, 4]", "need 64 bytes", "raw_data holds 48"]),
    ({"dims": [3, -4]}, ["negative dimension in [3, -4]"]),
], ids=["raw_data_short", "raw_data_long", "dims_too_large", "negative_dim"])
def test_stored_size_disagreeing_with_dims(changes, phrases, as_constant):
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(_model(_weight(**changes), as_constant))
    _assert_one_line(error, "'w'" if not as_constant else "'value'", *phrases)


def test_typed_values_disagreeing_with_dims():
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 4], float_data=WEIGHT.reshape(-1)[:11])
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(_model(tensor))
    _assert_one_line(error, "initializer 'w'", "need 12 values", "holds 11")


def _external_model(folder, location: str, offset: int | None = None, length: int | None = None) -> str:
    """model.onnx in `folder` whose initializer w lives in the external file `location`."""
    tensor = _weight()
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": offset, "length": length}
    for key, value in entries.items():
        if value is not None:
            tensor.external_data.add(key=key, value=str(value))
    path = folder / "model.onnx"
    path.write_bytes(_model(tensor).SerializeToString())
    return str(path)


def test_external_data_inside_the_folder_is_read(tmp_path):
    """The precondition of the tests below: a well-formed external initializer builds and matches onnxruntime."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "w.bin").write_bytes(b"\0" * 8 + WEIGHT.tobytes())
    path = _external_model(tmp_path, "data/w.bin", offset=8, length=48)
    feed = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}
    engine = tk.Runtime().deserialize(tk.Builder().build(parse_onnx(path)).serialize())  # by path: it has a folder
    actual = engine.create_execution_context().execute(feed)["y"]
    assert_close(actual, run_onnxruntime(onnx.load(path), feed)[0], "MatMul with external weights")


@pytest.fixture
def secret(tmp_path):
    """A file outside the model's folder, of exactly the weight's size: reading it would succeed silently."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(WEIGHT.tobytes())
    (tmp_path / "model").mkdir()
    return outside


def test_external_data_escaping_with_dot_dot(tmp_path, secret):
    path = _external_model(tmp_path / "model", "../outside.bin")
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(path)
    _assert_one_line(error, "initializer 'w'", "'../outside.bin'", "outside the model's folder")


def test_external_data_pointing_at_etc_passwd(tmp_path):
    path = _external_model(tmp_path, "../../../../../../../../etc/passwd")
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(path)
    _assert_one_line(error, "outside the model's folder")


def test_external_data_with_an_absolute_path(tmp_path, secret):
    path = _external_model(tmp_path / "model", str(secret))
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(path)
    _assert_one_line(error, "outside the model's folder")


def test_external_data_through_a_symlink_escaping_the_folder(tmp_path, secret):
    os.symlink(secret, tmp_path / "model" / "w.bin")
    path = _external_model(tmp_path / "model", "w.bin")
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(path)
    _assert_one_line(error, "'w.bin'", "outside the model's folder")


def test_external_data_file_missing(tmp_path):
    path = _external_model(tmp_path, "weights.bin")
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(path)
    _assert_one_line(error, "'weights.bin'", "does not exist")


@pytest.mark.parametrize("stored, offset, length, phrase", [
    (40, None, None, "external data is 40 bytes at offset 0"),  # the file is short
    (48, None, 64, "external data is 64 bytes at offset 0"),  # the length says more than the dims need
    (48, 16, 48, "external data is 48 bytes at offset 16"),  # the piece runs past the end of the file
], ids=["short_file", "length_disagrees", "past_the_end"])
def test_external_data_short_or_disagreeing(tmp_path, stored, offset, length, phrase):
    (tmp_path / "w.bin").write_bytes(WEIGHT.tobytes()[:stored])
    path = _external_model(tmp_path, "w.bin", offset, length)
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(path)
    _assert_one_line(error, "need 48 bytes", phrase)


def test_external_data_of_a_model_given_as_bytes_or_proto(tmp_path):
    (tmp_path / "w.bin").write_bytes(WEIGHT.tobytes())
    path = _external_model(tmp_path, "w.bin")
    model = onnx.load(path, load_external_data=False)
    for source in (model, model.SerializeToString()):
        with pytest.raises(ModelFormatError) as error:
            parse_onnx(source)
        _assert_one_line(error, "initializer 'w'", "external file", "pass the model by its path")
