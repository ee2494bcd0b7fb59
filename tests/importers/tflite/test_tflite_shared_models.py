"""The shared TFLite models (../shared/models/tflite) built by tensorkiln and compared with the outputs
tf.lite.Interpreter gave (reference.npz beside each model)."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk

pytest.importorskip("tflite", reason="the TFLite importer needs the `tflite` package (pip install tflite)")

from tensorkiln.importers.tflite import parse_tflite  # noqa: E402

# (folder, model file, absolute tolerance as a fraction of the output's largest magnitude)
MODELS = [
    ("ultraface_slim320", "version-slim-320_without_postprocessing.tflite", 1e-4),
    ("mediapipe_face_detection", "face_detection_short_range.tflite", 1e-4),
    # dynamic-range quantized (int8 weights, float activations): TFLite rounds each conv's input to int8 at run
    # time; a value on a rounding boundary may land one step away from TFLite's (the float sums differ in the
    # last bit), which moves the probabilities by ~3e-4. Computing without that rounding misses by 3e-3.
    ("fer_emotion", "emotion_model_quantized.tflite", 2e-3),
]


@pytest.mark.parametrize("folder, filename, tolerance", MODELS, ids=[m[0] for m in MODELS])
def test_shared_tflite_model_matches_interpreter(shared_dir, folder, filename, tolerance):
    base = shared_dir / "models" / "tflite" / folder
    stored = np.load(base / "reference.npz")
    inputs = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith("input:")}
    expected = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith("output:")}
    engine = tk.Runtime().deserialize(tk.Builder().build(parse_tflite(base / filename)).serialize())
    assert sorted(t.name for t in engine.inputs) == sorted(inputs)  # NHWC, named as in the model
    outputs = engine.create_execution_context().execute(inputs)
    assert sorted(outputs) == sorted(expected)
    for name, reference in expected.items():
        atol = tolerance * float(np.abs(reference).max())
        np.testing.assert_allclose(outputs[name], reference, rtol=1e-4, atol=atol, err_msg=f"{folder}: {name}")
