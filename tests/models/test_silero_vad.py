"""Silero VAD (LSTM, If subgraphs, state carried between calls) against stored references and onnxruntime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

MODELS = ["silero_vad_16k_op15", "silero_vad"]


def _engine(path, sample_rate):
    # The v6 model's `sr` input picks the 8 kHz or the 16 kHz network (an If on a run-time value); an engine
    # has fixed shapes, so the sample rate is fixed at build time and `sr` is no longer an engine input.
    network = parse_onnx(path, input_shapes={"input": (1, 512), "state": (2, 1, 128)},
                         input_values={"sr": np.array(sample_rate, dtype=np.int64)})
    return tk.Runtime().deserialize(tk.Builder().build(network).serialize())


@pytest.mark.parametrize("name", MODELS)
def test_matches_reference(shared_dir, name):
    folder = shared_dir / "models/onnx/silero_vad"
    data = np.load(folder / f"reference_{name}.npz")
    engine = _engine(folder / f"{name}.onnx", int(data["input:sr"]))
    assert [t.name for t in engine.inputs] == ["input", "state"]
    out = engine.create_execution_context().execute({"input": data["input:input"], "state": data["input:state"]})
    np.testing.assert_allclose(out["output"], data["output:output"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["stateN"], data["output:stateN"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_state_carried_over_a_sequence_of_calls(shared_dir, name):
    path = shared_dir / "models/onnx/silero_vad" / f"{name}.onnx"
    context = _engine(path, 16000).create_execution_context()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    t = np.arange(512 * 6) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.06) + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)
    ours = theirs = np.zeros((2, 1, 128), np.float32)
    for chunk in audio.reshape(6, 1, 512):
        produced = context.execute({"input": chunk, "state": ours})
        expected = session.run(None, {"input": chunk, "state": theirs, "sr": np.array(16000, np.int64)})
        np.testing.assert_allclose(produced["output"], expected[0], rtol=1e-4, atol=1e-5)
        ours, theirs = produced["stateN"], expected[1]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
