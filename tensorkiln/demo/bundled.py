"""The files `kiln demo` ships (tensorkiln/demo/data/, listed with sources and licences in its README.md), and
their loaders. They were written by scripts/make_demo_data.py from the shared corpus."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

LENET_PROTOTXT = DATA_DIR / "lenet.prototxt"
LENET_CAFFEMODEL = DATA_DIR / "lenet_iter_10000.caffemodel"
MNIST_DIGITS = DATA_DIR / "mnist_digits.npz"
ULTRAFACE_ONNX = DATA_DIR / "ultraface_slim_320.onnx"
FACE_IMAGE = DATA_DIR / "astronaut_320x240.npz"


@dataclasses.dataclass(frozen=True)
class BundledModel:
    """One model of the demo: what `kiln demo --help` says about it."""
    key: str  # the --model choice
    title: str
    files: tuple[Path, ...]
    data: str  # what it runs on
    source: str
    licence: str


LENET = BundledModel(
    "lenet", "LeNet (Caffe, BVLC MNIST example)", (LENET_PROTOTXT, LENET_CAFFEMODEL),
    "500 MNIST digits (50 per class) with their labels",
    "BVLC Caffe examples/mnist, trained 10,000 iterations; MNIST by Y. LeCun and C. Cortes",
    "model BSD-2-Clause (Caffe); digits CC BY-SA 3.0")
ULTRAFACE = BundledModel(
    "ultraface", "UltraFace slim-320 face detector (ONNX)", (ULTRAFACE_ONNX,),
    "one 320x240 photo: astronaut Eileen Collins (NASA)",
    "github.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB; photo via scikit-image's sample data",
    "model MIT; photo public domain (NASA)")
BUNDLED_MODELS = (LENET, ULTRAFACE)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled MNIST digits: uint8 images (N, 28, 28), white on black, and their labels (N,)."""
    with np.load(MNIST_DIGITS, allow_pickle=False) as archive:
        return archive["images"], archive["labels"].astype(np.int64)


def load_face_image() -> np.ndarray:
    """The bundled photo as uint8 RGB (240, 320, 3)."""
    with np.load(FACE_IMAGE, allow_pickle=False) as archive:
        row_deltas = archive["row_deltas"]
    # stored as differences between consecutive rows, which deflate compresses about a third better than the
    # pixels; a cumulative sum in uint8 (wrapping mod 256, as the differences did) gives the pixels back
    return np.cumsum(row_deltas, axis=0, dtype=np.uint8)


def bundled_bytes() -> int:
    return sum(path.stat().st_size for path in DATA_DIR.iterdir() if path.is_file())
