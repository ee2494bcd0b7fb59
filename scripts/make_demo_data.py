"""Writes the small files that `kiln demo` bundles (tensorkiln/demo/data/) from the shared corpus (../shared).

Run once by a maintainer; the demo itself reads only the bundled files. What it writes:
- mnist_digits.npz: the first DIGITS_PER_CLASS digits of each class of MNIST (mnist_5k), uint8 28x28, with labels;
- astronaut_320x240.npz: astronaut.png (NASA, public domain) cropped to 4:3 around the face and resized to the
  UltraFace input size, uint8 HxWx3, stored as row differences (see tensorkiln/demo/bundled.py: they compress
  about a third better than the pixels themselves);
- copies of the LeNet prototxt + caffemodel and the UltraFace slim-320 ONNX model, with their licences.

    python3 scripts/make_demo_data.py [--shared ../shared]
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tensorkiln" / "demo" / "data"
DIGITS_PER_CLASS = 50  # 500 digits, about 100 KB compressed
FACE_CROP = (0, 512, 0, 384)  # (x0, x1, y0, y1) of the 512x512 astronaut: a 4:3 window with the face inside
IMAGE_SIZE = (320, 240)  # UltraFace slim-320's input, width x height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    shared = parser.parse_args().shared
    DATA.mkdir(parents=True, exist_ok=True)
    write_digits(shared / "datasets" / "mnist_5k" / "mnist_5k.csv.gz")
    write_image(shared / "datasets" / "images" / "astronaut.png")
    lenet = shared / "models" / "caffe" / "lenet_mnist"
    shutil.copyfile(lenet / "lenet.prototxt", DATA / "lenet.prototxt")
    shutil.copyfile(lenet / "lenet_iter_10000.caffemodel", DATA / "lenet_iter_10000.caffemodel")
    shutil.copyfile(lenet / "LICENSE", DATA / "LICENSE-caffe-lenet.txt")
    ultraface = shared / "models" / "onnx" / "ultraface"
    shutil.copyfile(ultraface / "version-slim-320_without_postprocessing.onnx", DATA / "ultraface_slim_320.onnx")
    shutil.copyfile(ultraface / "LICENSE", DATA / "LICENSE-ultraface.txt")
    total = sum(p.stat().st_size for p in DATA.iterdir())
    print(f"wrote {DATA}: {total / 2**20:.2f} MiB in {len(list(DATA.iterdir()))} files")


def write_digits(csv_gz: Path) -> None:
    table = np.loadtxt(gzip.open(csv_gz), delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    chosen = np.concatenate([np.flatnonzero(labels == digit)[:DIGITS_PER_CLASS] for digit in range(10)])
    chosen.sort()  # the file's own order, classes mixed
    np.savez_compressed(DATA / "mnist_digits.npz", images=pixels[chosen], labels=labels[chosen].astype(np.uint8))


def write_image(png: Path) -> None:
    x0, x1, y0, y1 = FACE_CROP
    crop = torch.from_numpy(read_png_rgb(png)[y0:y1, x0:x1].copy()).permute(2, 0, 1)[None].float()
    width, height = IMAGE_SIZE
    resized = torch.nn.functional.interpolate(crop, size=(height, width), mode="bilinear", antialias=True,
                                              align_corners=False)
    image = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    row_deltas = np.diff(image, axis=0, prepend=np.zeros((1, width, 3), np.uint8))  # uint8: wraps mod 256
    np.savez_compressed(DATA / "astronaut_320x240.npz", row_deltas=row_deltas)


def read_png_rgb(path: Path) -> np.ndarray:
    """An 8-bit RGB, non-interlaced PNG as uint8 HxWx3 (enough for astronaut.png; no PIL here)."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    offset, idat, header = 8, b"", None
    while offset < len(blob):
        length, kind = struct.unpack(">I4s", blob[offset:offset + 8])
        body = blob[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert (depth, color, interlace) == (8, 2, 0), "only 8-bit RGB, non-interlaced"
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 3)
    return _unfilter(raw, bytes_per_pixel=3).reshape(height, width, 3)


def _unfilter(raw: np.ndarray, bytes_per_pixel: int) -> np.ndarray:
    """PNG's per-row filters undone (types 0..4: none, sub, up, average, paeth)."""
    height, stride = raw.shape[0], raw.shape[1] - 1
    out = np.zeros((height, stride), np.int64)
    for y in range(height):
        kind, row = raw[y, 0], raw[y, 1:].astype(np.int64)
        above = out[y - 1] if y else np.zeros(stride, np.int64)
        if kind in (0, 2):
            out[y] = (row + (above if kind == 2 else 0)) % 256
            continue
        for x in range(stride):
            left = out[y, x - bytes_per_pixel] if x >= bytes_per_pixel else 0
            upper_left = above[x - bytes_per_pixel] if x >= bytes_per_pixel else 0
            if kind == 1:
                predicted = left
            elif kind == 3:
                predicted = (left + above[x]) // 2
            else:
                predicted = _paeth(left, above[x], upper_left)
            out[y, x] = (row[x] + predicted) % 256
    return out.astype(np.uint8)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


if __name__ == "__main__":
    main()
