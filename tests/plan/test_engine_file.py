"""The engine file: round trip, and clear errors for truncated, corrupted, foreign and newer files."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save as save_numpy

import tensorkiln as tk
from tensorkiln.errors import EngineFormatError
from tensorkiln.ir.ops import ActivationType


def small_engine():
    rng = np.random.default_rng(0)
    network = tk.NetworkDefinition("small")
    x = network.add_input("x", tk.DataType.FLOAT, (2, 3, 7, 5))
    conv = network.add_convolution(x, 4, (3, 3), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4), padding=1)
    act = network.add_activation(conv.get_output(0), ActivationType.LEAKY_RELU, alpha=0.1)
    network.mark_output(act.get_output(0))
    return tk.Builder().build(network)


def test_round_trip_gives_identical_outputs(tmp_path):
    engine = small_engine()
    path = tmp_path / "small.engine"
    engine.save(path)
    loaded = tk.Runtime().load(path)
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 5), dtype=np.float32)
    expected = engine.create_execution_context().execute({"x": x})
    actual = loaded.create_execution_context().execute({"x": x})
    np.testing.assert_array_equal(actual[loaded.get_tensor_name(1)], expected[engine.get_tensor_name(1)])
    assert loaded.plan == engine.plan


def test_truncated_file_is_reported(tmp_path):
    blob = small_engine().serialize()
    for cut in (len(blob) - 7, len(blob) // 2, 20, 4):
        with pytest.raises(EngineFormatError, match="truncated|not a tensorkiln engine"):
            tk.Runtime().deserialize(blob[:cut])


def test_corrupted_weights_fail_the_checksum():
    blob = bytearray(small_engine().serialize())
    blob[-3] ^= 0xFF
    with pytest.raises(EngineFormatError, match="corrupted"):
        tk.Runtime().deserialize(bytes(blob))


def test_foreign_files_are_rejected(tmp_path):
    with pytest.raises(EngineFormatError, match="not a tensorkiln engine"):
        tk.Runtime().deserialize(save_numpy({"w": np.ones(3, np.float32)}))
    with pytest.raises(EngineFormatError, match="not a tensorkiln engine"):
        tk.Runtime().deserialize(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    onnx_like = tmp_path / "model.onnx"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch" * 10)
    with pytest.raises(EngineFormatError):
        tk.Runtime().load(onnx_like)
    with pytest.raises(EngineFormatError, match="does not exist"):
        tk.Runtime().load(tmp_path / "missing.engine")


def test_other_format_version_says_rebuild():
    blob = small_engine().serialize()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    header["__metadata__"]["format_version"] = "999"
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    with pytest.raises(EngineFormatError, match="version 999.*rebuild"):
        tk.Runtime().deserialize(struct.pack("<Q", len(new_header)) + new_header + blob[8 + length:])


def test_engine_file_holds_no_pickle():
    blob = small_engine().serialize()
    assert b"\x80\x04\x95" not in blob and b"\x80\x02" not in blob  # pickle protocol headers
