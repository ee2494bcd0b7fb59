"""Keras applications (weights=None: random weights, no download) exported as SavedModels, imported through
tf2onnx (parse_tensorflow) and compared with TensorFlow's own output. Skipped without TensorFlow and tf2onnx
(pip install tensorkiln[tensorflow]).

TensorFlow runs in child processes: it and Triton (loaded by tensorkiln's kernels) cannot share a process."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.tensorflow import is_tensorflow_model, parse_tensorflow, tensorflow_available

needs_tensorflow = pytest.mark.skipif(not tensorflow_available(),
                                      reason="tensorflow and tf2onnx are not installed "
                                             "(pip install tensorkiln[tensorflow])")

APPLICATIONS = [("MobileNetV2", 96), ("ResNet50", 64), ("EfficientNetB0", 64)]

EXPORT = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, numpy as np
keras.utils.set_random_seed(0)
model = getattr(keras.applications, {app!r})(weights=None, input_shape=({size}, {size}, 3),
                                             classifier_activation=None)
model.export({folder!r}, verbose=False)
x = np.random.default_rng(1).uniform(-1, 1, (2, {size}, {size}, 3)).astype(np.float32)
np.savez({reference!r}, x=x, y=model(x, training=False).numpy())
"""


def export_application(app: str, size: int, tmp_path):
    folder, reference = tmp_path / app, tmp_path / f"{app}.npz"
    code = EXPORT.format(app=app, size=size, folder=str(folder), reference=str(reference))
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, capture_output=True)
    return folder, np.load(reference)


@needs_tensorflow
@pytest.mark.slow
@pytest.mark.parametrize("app, size", APPLICATIONS, ids=[a for a, _ in APPLICATIONS])
def test_keras_application_matches_tensorflow(app, size, tmp_path):
    folder, stored = export_application(app, size, tmp_path)
    assert is_tensorflow_model(folder)
    network = parse_tensorflow(folder, input_shapes={"keras_tensor": stored["x"].shape})
    engine = tk.Builder().build(network)
    (name,) = [t.name for t in engine.inputs]
    (logits,) = engine.create_execution_context().execute({name: stored["x"]}).values()
    reference = stored["y"]
    # logits, not a saturated softmax; with random weights they are tiny (MobileNetV2's ~1e-11) but differ from
    # class to class and image to image, so the relative comparison below still tells networks apart
    assert np.ptp(reference, axis=1).min() > 10 * 1e-4 * np.abs(reference).max()
    assert np.abs(reference[0] - reference[1]).max() > 10 * 1e-4 * np.abs(reference).max()
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max(), err_msg=app)


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        parse_tensorflow(tmp_path / "absent_saved_model")


def test_without_the_extra_the_error_names_it(tmp_path, monkeypatch):
    import tensorkiln.importers.tensorflow as tf_importer

    monkeypatch.setattr(tf_importer, "tensorflow_available", lambda: False)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now raises ImportError
    (tmp_path / "model.keras").write_bytes(b"not used")
    with pytest.raises(ModelFormatError, match=r"tensorkiln\[tensorflow\]"):
        parse_tensorflow(tmp_path / "model.keras")
