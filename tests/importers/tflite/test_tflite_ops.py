"""Every small TFLite model of data/ (written by scripts/make_tflite_fixtures.py with TensorFlow's converter, or
directly with TensorFlow's schema for ops the converter never emits) built and run by tensorkiln and compared
with the outputs tf.lite.Interpreter gave for the same inputs.

Float outputs agree within 1e-4 relative; quantized (int8) outputs within one quantization step; integer and
boolean outputs exactly. Each case names the TFLite ops it exists for; the test checks they are in the model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tensorkiln as tk

pytest.importorskip("tflite", reason="the TFLite importer needs the `tflite` package (pip install tflite)")

from tensorkiln.importers.tflite import parse_tflite, supported_ops  # noqa: E402
from tensorkiln.importers.tflite.model import load_tflite  # noqa: E402

DATA = Path(__file__).parent / "data"
CASES = sorted(p.stem for p in DATA.glob("*.tflite"))


def load_case(stem: str):
    stored = np.load(DATA / f"{stem}.npz")
    inputs = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith("input:")}
    outputs = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith("output:")}
    return inputs, outputs, [str(t) for t in stored["target"]]


def run_case(stem: str, inputs: dict) -> dict:
    engine = tk.Builder().build(parse_tflite(DATA / f"{stem}.tflite"))
    return engine.create_execution_context().execute(inputs)


@pytest.mark.parametrize("stem", CASES)
def test_tflite_case_matches_interpreter(stem):
    inputs, expected, targets = load_case(stem)
    model_ops = {op.op_name for op in load_tflite(DATA / f"{stem}.tflite").subgraphs[0].operators}
    assert set(targets) <= model_ops, f"{stem}: the model lacks {set(targets) - model_ops}"
    outputs = run_case(stem, inputs)
    assert sorted(outputs) == sorted(expected)
    for name, reference in expected.items():
        actual = outputs[name]
        assert actual.shape == reference.shape, (stem, name)
        assert actual.dtype == reference.dtype, (stem, name, actual.dtype, reference.dtype)
        if reference.dtype.kind == "f":
            np.testing.assert_allclose(actual, reference, rtol=1e-4, atol=1e-5, err_msg=f"{stem}: {name}")
        elif reference.dtype in (np.int8, np.uint8):  # quantized: within one step of TFLite's integer kernels
            step = np.abs(actual.astype(np.int32) - reference.astype(np.int32)).max()
            assert step <= 1, f"{stem}: {name} differs by {step} quantization steps"
        else:
            np.testing.assert_array_equal(actual, reference, err_msg=f"{stem}: {name}")


def test_every_converted_op_has_a_fixture():
    covered = {t for stem in CASES for t in load_case(stem)[2]}
    assert covered <= set(supported_ops()), covered - set(supported_ops())
    untested = set(supported_ops()) - covered
    assert not untested, (f"converted TFLite ops without a fixture: {sorted(untested)}; add a case to "
                          "scripts/make_tflite_fixtures.py (or stop converting the op)")
    assert len(covered) >= 80, f"only {len(covered)} TFLite builtin ops are tested: {sorted(covered)}"
