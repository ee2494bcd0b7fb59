"""Run-time input checks (issue 18): anything an engine cannot take is one InputError that names the input and the
fix, raised before any work; inputs it can take in another form (big-endian, non-contiguous) work. The same through
`kiln run --inputs NAME:FILE.npy`: one line on stderr, exit code 2. Each case below raised a TypeError, ValueError,
AttributeError or RuntimeError traceback (or, for a flat array, a less helpful message) before the fix, except the
ones marked as working already."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.cli.main import main
from tensorkiln.errors import InputError
from tensorkiln.ir.ops import ElementWiseOperation

SHAPE = (3, 5)


@pytest.fixture(scope="module")
def engine():
    network = tk.NetworkDefinition("add")
    a = network.add_input("a", tk.DataType.FLOAT, SHAPE)
    b = network.add_input("b", tk.DataType.FLOAT, SHAPE[1:])
    network.mark_output(network.add_elementwise(a, b, ElementWiseOperation.SUM, name="sum").get_output(0))
    return tk.Builder().build(network)


def _a(dtype=np.float32) -> np.ndarray:
    return np.arange(15).reshape(SHAPE).astype(dtype)


B = np.linspace(-1, 1, 5, dtype=np.float32)

BAD_FEEDS = [  # (id, feed, fragments of the message)
    ("uint16", {"a": _a(np.uint16), "b": B}, ["'a'", "uint16", "astype('float32')"]),
    ("uint32", {"a": _a(np.uint32), "b": B}, ["'a'", "uint32", "astype('float32')"]),
    ("complex", {"a": _a(np.complex64), "b": B}, ["'a'", "complex", "astype('float32')"]),
    ("str", {"a": np.full(SHAPE, "x"), "b": B}, ["'a'", "text", "astype('float32')"]),
    ("object", {"a": np.empty(SHAPE, dtype=object), "b": B}, ["'a'", "Python objects"]),
    ("ragged_list", {"a": [[1.0, 2.0], [3.0]], "b": B}, ["'a'", "cannot be made an array"]),
    ("scalar", {"a": np.float32(1.0), "b": B}, ["'a' is a scalar (0-d)", "(3, 5)"]),
    ("meta_tensor", {"a": torch.empty(SHAPE, device="meta"), "b": torch.from_numpy(B)}, ["'a'", "meta", "CPU"]),
    ("sparse_tensor", {"a": torch.eye(3, 5).to_sparse(), "b": torch.from_numpy(B)}, ["'a'", "to_dense"]),
    ("torch_complex", {"a": torch.zeros(SHAPE, dtype=torch.complex64), "b": torch.from_numpy(B)},
     ["'a'", "complex64", "float32"]),
    ("reshapeable", {"a": _a().reshape(15), "b": B}, ["'a' is of shape (15,)", "reshape((3, 5))"]),
]


@pytest.mark.parametrize("feed, fragments", [c[1:] for c in BAD_FEEDS], ids=[c[0] for c in BAD_FEEDS])
def test_inputs_an_engine_cannot_take_are_one_clear_error(engine, feed, fragments):
    with pytest.raises(InputError) as raised:
        engine.create_execution_context().execute(feed)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("feed", [_a(), [_a(), B], (_a(), B)], ids=["array", "list", "tuple"])
def test_execute_needs_a_mapping(engine, feed):
    with pytest.raises(InputError, match=r"mapping of input names to arrays.*\{'a': array, 'b': array\}"):
        engine.create_execution_context().execute(feed)


def test_big_endian_and_non_contiguous_inputs_work(engine):
    """Big-endian arrays are converted to native byte order (same values); non-contiguous arrays and tensors are
    read as they are (the non-contiguous cases worked already)."""
    context = engine.create_execution_context()
    want = _a() + B
    big_endian = _a().astype(">f4")
    np.testing.assert_array_equal(context.execute({"a": big_endian, "b": B.astype(">f4")})["sum_output_0"], want)
    transposed = np.ascontiguousarray(_a().T).T  # Fortran order
    strided = np.stack([B, B])[:, ::1][0]
    np.testing.assert_array_equal(context.execute({"a": transposed, "b": strided})["sum_output_0"], want)
    every_other = np.zeros((3, 10), np.float32)
    every_other[:, ::2] = _a()
    np.testing.assert_array_equal(context.execute({"a": every_other[:, ::2], "b": B})["sum_output_0"], want)
    torch_view = torch.from_numpy(np.ascontiguousarray(_a().T)).t()
    np.testing.assert_array_equal(context.execute({"a": torch_view, "b": torch.from_numpy(B)})["sum_output_0"], want)


@pytest.mark.parametrize("array, fragments", [
    (_a(np.uint16), ["'a'", "uint16", "float32"]),
    (_a(np.complex64), ["'a'", "complex64", "float32"]),
    (np.full(SHAPE, "x"), ["'a'", "float32"]),
    (np.float32(1.0), ["'a'", "scalar", "3x5"]),
], ids=["uint16", "complex", "str", "scalar"])
def test_kiln_run_rejects_such_input_files_in_one_line(engine, tmp_path, capsys, array, fragments):
    """(Passed before the fix too: kiln's loader converts within a kind and refuses across kinds; kept as a guard.)"""
    path = tmp_path / "model.engine"
    engine.save(path)
    np.save(tmp_path / "a.npy", array)
    assert main(["run", str(path), "--inputs", f"a:{tmp_path / 'a.npy'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_kiln_run_takes_a_big_endian_file(engine, tmp_path, capsys):
    path = tmp_path / "model.engine"
    engine.save(path)
    np.save(tmp_path / "a.npy", _a().astype(">f4"))
    np.save(tmp_path / "b.npy", B.astype(">f4"))
    assert main(["run", str(path), "--inputs", f"a:{tmp_path / 'a.npy'},b:{tmp_path / 'b.npy'}", "--save-outputs",
                 str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as outputs:
        np.testing.assert_array_equal(outputs["sum_output_0"], _a() + B)
