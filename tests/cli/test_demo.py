"""`kiln demo` (issue 26): the bundled models build and run on the CPU, LeNet reads the bundled digits as the
labels say, UltraFace finds the face in the bundled photo with the outputs and faces of onnxruntime, and the
bundled files stay small and listed with their licences."""
from __future__ import annotations

import numpy as np
import pytest

from tensorkiln.cli.main import main
from tensorkiln.demo import BUNDLED_MODELS, DemoSettings, LenetReport, UltrafaceReport, bundled_bytes, run_demo
from tensorkiln.demo import bundled, ultraface
from tensorkiln.demo.measure import onnxruntime_peer

ITERATIONS = 2  # the code path, not the figures


@pytest.fixture(scope="module")
def reports() -> dict:
    pytest.importorskip("onnxruntime")
    found = {type(report): report for report in run_demo(("lenet", "ultraface"),
                                                         DemoSettings(device="cpu", iterations=ITERATIONS))}
    return found


def test_lenet_reads_the_bundled_digits(reports):
    report: LenetReport = reports[LenetReport]
    assert report.total == 500 and report.accuracy >= 0.98  # 99.8% on mnist_5k with OpenCV's Caffe importer
    assert sum(count for _, _, count in report.misread) == report.total - report.correct
    assert report.run.target == "cpu" and report.run.input_shape == (100, 1, 28, 28)
    optimizations = report.run.optimizations
    assert optimizations.steps_after < optimizations.layers_before
    assert dict(optimizations.rewrites).get("fuse_vertical.fused_convolution") == 2  # conv1, conv2 with their bias
    assert report.run.latency.iterations == ITERATIONS and report.run.latency.median_ms > 0


def test_ultraface_finds_the_face_as_onnxruntime_does(reports):
    report: UltrafaceReport = reports[UltrafaceReport]
    assert report.outputs_agree and report.max_difference <= 1e-4
    assert report.faces_agree and len(report.faces) == 1
    face = report.faces[0]
    # the astronaut's face, as seen in the bundled 320x240 photo: about x 110..170, y 40..110
    assert 95 < face.left < 125 and 155 < face.right < 185 and 25 < face.top < 55 and 95 < face.bottom < 125
    assert face.score > 0.99
    assert report.peer_latency is not None and report.peer_latency.runtime.startswith("onnxruntime")
    assert dict(report.run.optimizations.rewrites)["fuse_vertical.fused_convolution"] > 30


def test_kiln_demo_prints_what_a_user_wants_to_see(capsys):
    pytest.importorskip("onnxruntime")
    assert main(["demo", "--device", "cpu", "--iterations", "1", "--model", "ultraface"]) == 0
    out = capsys.readouterr().out
    for fragment in ("UltraFace", "faces found", "outputs agree", "the same face", "optimizations applied",
                     "fuse_vertical", "cpu.fused_convolution.torch", "onnxruntime (CPUExecutionProvider)",
                     "median ms", "items/s"):
        assert fragment in out, fragment
    assert "LeNet" not in out


def test_demo_on_cuda_without_a_gpu_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["demo", "--device", "cuda", "--model", "lenet", "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and "CUDA" in err and err.count("\n") == 1


def test_without_onnxruntime_the_demo_says_so(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    note = onnxruntime_peer(bundled.ULTRAFACE_ONNX, "cpu")
    assert isinstance(note, str) and "pip install onnxruntime" in note


def test_decoding_matches_the_models_own_postprocessing(shared_dir):
    """The demo decodes UltraFace's raw outputs itself; the exported model with postprocessing decodes them too."""
    ort = pytest.importorskip("onnxruntime")
    folder = shared_dir / "models" / "onnx" / "ultraface"
    image = ultraface.preprocess(bundled.load_face_image())
    _, regressions = ort.InferenceSession(str(bundled.ULTRAFACE_ONNX)).run(None, {"input": image})
    _, decoded = ort.InferenceSession(str(folder / "version-slim-320.onnx")).run(None, {"input": image})
    size = np.array([ultraface.IMAGE_WIDTH, ultraface.IMAGE_HEIGHT] * 2, np.float32)
    np.testing.assert_allclose(ultraface.decode_boxes(regressions[0]) / size, decoded[0], atol=1e-5)


def test_bundled_files_are_small_listed_and_licensed():
    assert bundled_bytes() < 3.1e6
    listing = (bundled.DATA_DIR / "README.md").read_text()
    for path in bundled.DATA_DIR.iterdir():
        if path.name != "README.md":
            assert path.name in listing, f"{path.name} is not listed in the data README"
    for model in BUNDLED_MODELS:
        assert model.licence and all(path.is_file() for path in model.files)
    assert "CC BY-SA 3.0" in listing and "public domain" in listing and "MIT" in listing and "BSD-2" in listing
    images, labels = bundled.load_digits()
    assert images.shape == (500, 28, 28) and images.dtype == np.uint8 and np.bincount(labels).tolist() == [50] * 10
    photo = bundled.load_face_image()
    assert photo.shape == (240, 320, 3) and photo.dtype == np.uint8 and 60 < photo.mean() < 200
