"""Calibration data sources and the calibrator's re-batching to the network's input shape."""
from __future__ import annotations

import numpy as np
import pytest

from tensorkiln.errors import BuildError
from tensorkiln.quant.calibrator import DataCalibrator, rebatch
from tensorkiln.quant.sources import ImagePreprocessing, array_file, calibration_source


def test_rebatch_joins_and_splits_samples_in_order():
    samples = [np.full((n, 2), i, np.float32) for i, n in enumerate((1, 4, 2, 3))]  # 10 rows
    rows = np.concatenate(samples)
    batches = list(rebatch(samples, [("x", (3, 2))]))
    assert len(batches) == 3  # the last row, less than a batch, is dropped
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), rows[:9])
    single = list(rebatch([np.ones(2, np.float32)] * 2, [("x", (1, 2))]))  # samples without a batch dim
    assert [b["x"].shape for b in single] == [(1, 2), (1, 2)]


def test_rebatch_multiple_inputs_by_name_and_errors():
    data = [{"a": np.zeros((2, 3)), "b": np.ones((2, 1))}]
    (batch,) = rebatch(data, [("a", (2, 3)), ("b", (2, 1))])
    assert batch["a"].shape == (2, 3) and batch["b"].shape == (2, 1)
    with pytest.raises(BuildError, match=r"input 'x' has shape \(4, 5\).*takes \(1, 6\)"):
        list(rebatch([np.zeros((4, 5))], [("x", (1, 6))]))
    with pytest.raises(BuildError, match="lacks inputs \\['b'\\]"):
        list(rebatch([{"a": np.zeros((2, 3))}], [("a", (2, 3)), ("b", (2, 1))]))
    with pytest.raises(BuildError, match="has 2 inputs"):
        list(rebatch([np.zeros((2, 3))], [("a", (2, 3)), ("b", (2, 1))]))


def test_max_batches_limits_the_calibrator():
    calibrator = DataCalibrator([np.zeros((10, 2), np.float32)], max_batches=2)
    specs = [("x", (2, 2))]
    assert [calibrator.get_batch(specs) is not None for _ in range(3)] == [True, True, False]


def test_npy_npz_and_folders_of_them(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.savez(tmp_path / "b.npz", **{"input:x": np.ones((1, 3), np.float32), "output:y": np.zeros(2)})
    items = list(array_file(tmp_path))
    np.testing.assert_array_equal(items[0], np.arange(6).reshape(2, 3))
    assert set(items[1]) == {"x"}  # the reference files' `input:` prefix dropped, outputs left out
    with pytest.raises(BuildError, match="does not exist"):
        calibration_source(tmp_path / "missing", None, (1, 1))
    with pytest.raises(BuildError, match="give a folder of images, an .npy or an .npz"):
        list(array_file(tmp_path / "a.txt"))


def test_image_folder_with_declared_preprocessing(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "one.png")
    preprocessing = ImagePreprocessing.parse("crop=4x6,scale=0.5,mean=1:2:3,std=2,order=bgr,layout=nchw")
    (image,) = calibration_source(tmp_path, preprocessing, (6, 8))  # resize to 6x8 (a no-op), crop the centre
    expected = (pixels[1:5, 1:7, ::-1].astype(np.float32) * 0.5 - np.float32([1, 2, 3])) / 2
    np.testing.assert_allclose(image, expected.transpose(2, 0, 1)[None], rtol=1e-6)
    gray = ImagePreprocessing(channel_order="gray", layout="nhwc", resize=(3, 4))
    (small,) = calibration_source(tmp_path, gray, (0, 0))
    assert small.shape == (1, 3, 4, 1) and small.dtype == np.float32
    with pytest.raises(ValueError, match="unknown preprocessing key 'size'"):
        ImagePreprocessing.parse("size=3")
