"""A Caffe net given to the ONNX importer (`kiln build lenet.prototxt`, parse_onnx('lenet.caffemodel')): one
ModelFormatError line saying what the file is and how to import it (parse_caffe, or kiln build --deploy), whether
the file is named .prototxt / .caffemodel, misnamed .onnx, or given as bytes. The CLI side is tested in
tests/cli/test_cli_inputs_plugins.py; this is the library's."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.onnx import parse_onnx

DEMO = Path(__file__).resolve().parents[3] / "tensorkiln" / "demo" / "data"
PROTOTXT, CAFFEMODEL = DEMO / "lenet.prototxt", DEMO / "lenet_iter_10000.caffemodel"


def _refused(source) -> str:
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(source)
    message = str(error.value)
    assert "\n" not in message and "is not an ONNX model" in message
    return message


@pytest.mark.parametrize("misnamed", [False, True], ids=["prototxt", "named_onnx"])
def test_a_prototxt_given_as_onnx_says_to_use_deploy(tmp_path, misnamed):
    path = tmp_path / ("lenet.onnx" if misnamed else "lenet.prototxt")
    shutil.copy(PROTOTXT, path)
    message = _refused(path)
    assert "looks like a Caffe prototxt" in message
    assert f"parse_caffe({str(path)!r}, 'net.caffemodel')" in message and f"--deploy {path}" in message


@pytest.mark.parametrize("misnamed", [False, True], ids=["caffemodel", "named_onnx"])
def test_a_caffemodel_given_as_onnx_says_to_use_deploy_and_model(tmp_path, misnamed):
    path = tmp_path / ("lenet.onnx" if misnamed else "lenet.caffemodel")
    shutil.copy(CAFFEMODEL, path)
    message = _refused(path)
    assert "looks like a Caffe caffemodel" in message
    assert "--deploy net.prototxt" in message and f"--model {path}" in message


@pytest.mark.parametrize("source, kind", [(PROTOTXT, "prototxt"), (CAFFEMODEL, "caffemodel")])
def test_caffe_bytes_given_as_onnx(source, kind):
    message = _refused(source.read_bytes())
    assert f"looks like a Caffe {kind}" in message and "--deploy" in message


def test_a_truncated_onnx_model_is_not_called_caffe(tmp_path):
    """The hint is for Caffe files only: a damaged ONNX file keeps the 'truncated or corrupt' message."""
    path = tmp_path / "model.onnx"
    path.write_bytes((DEMO / "ultraface_slim_320.onnx").read_bytes()[:5000])
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(path)
    message = str(error.value)
    assert "Caffe" not in message and "--deploy" not in message
    assert "truncated or corrupt" in message
