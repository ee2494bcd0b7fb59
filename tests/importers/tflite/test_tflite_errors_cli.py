"""kiln build on a .tflite file; the importer's errors (not a flatbuffer, truncated, unsupported ops)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.errors import ModelFormatError, UnsupportedOpError

pytest.importorskip("tflite", reason="the TFLite importer needs the `tflite` package (pip install tflite)")

from tensorkiln.importers.tflite import parse_tflite  # noqa: E402
from tensorkiln.importers.tflite import parser as tflite_parser  # noqa: E402

DATA = Path(__file__).parent / "data"


def test_kiln_build_takes_a_tflite_file(tmp_path):
    from tensorkiln.cli.main import main

    engine_path = tmp_path / "conv.engine"
    assert main(["build", str(DATA / "conv_same_relu_int8.tflite"), "-o", str(engine_path)]) == 0
    engine = tk.Runtime().load(engine_path)
    stored = np.load(DATA / "conv_same_relu_int8.npz")
    out = engine.create_execution_context().execute({"x": stored["input:x"]})["output_0"]
    assert out.dtype == np.int8 and np.abs(out.astype(int) - stored["output:output_0"]).max() <= 1


def test_not_a_tflite_file_is_one_clear_error(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x08\x07onnx-ish bytes")
    with pytest.raises(ModelFormatError, match="not a TFLite flatbuffer"):
        parse_tflite(path)


def test_truncated_tflite_file_is_one_clear_error(tmp_path):
    data = (DATA / "conv_same_relu.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[:200])
    with pytest.raises(ModelFormatError, match="truncated or corrupt|holds"):
        parse_tflite(path)


def test_unsupported_op_names_op_index_subgraph_and_plugin_route(monkeypatch):
    real = tflite_parser.find_converter
    monkeypatch.setattr(tflite_parser, "find_converter", lambda name: None if name == "CONV_2D" else real(name))
    with pytest.raises(UnsupportedOpError, match=r"CONV_2D at operator 0 of subgraph 0.*register_plugin"):
        parse_tflite(DATA / "conv_same_relu.tflite")
