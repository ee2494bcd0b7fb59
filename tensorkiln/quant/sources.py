"""Calibration data sources: a folder of images with a declared preprocessing, .npy/.npz files, any iterable.

Each source is an iterable of samples or batches for the network's inputs: an array (a network with one input) or a
{input name: array} mapping. The calibrator (calibrator.py) cuts them into batches of the network's own shape.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from ..errors import BuildError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
Sample = np.ndarray | Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """How an image file becomes a network input: y = (pixel * scale - mean) / std per channel.

    resize: (height, width), or an int for the shorter side (the aspect ratio kept); None: no resize where there is
    a crop, else the network input's size. crop: a centre crop (height, width) after the resize. channel_order:
    "rgb", "bgr" or "gray". layout: "nchw" or "nhwc". mean and std are per channel (one value: all channels), in
    the scaled units.
    """
    resize: tuple[int, int] | int | None = None
    crop: tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "rgb"
    layout: str = "nchw"

    def __post_init__(self):
        if self.channel_order not in ("rgb", "bgr", "gray"):
            raise ValueError(f"channel_order {self.channel_order!r}: give rgb, bgr or gray")
        if self.layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout {self.layout!r}: give nchw or nhwc")

    @classmethod
    def parse(cls, text: str) -> "ImagePreprocessing":
        """From `resize=256,crop=224x224,scale=0.0039,mean=0.485:0.456:0.406,std=...,order=bgr,layout=nhwc`."""
        fields: dict = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            key = {"order": "channel_order"}.get(key.strip(), key.strip())
            if key in ("resize", "crop"):
                sizes = tuple(int(v) for v in value.lower().split("x"))
                fields[key] = sizes[0] if key == "resize" and len(sizes) == 1 else (sizes * 2)[:2]
            elif key in ("mean", "std"):
                fields[key] = tuple(float(v) for v in value.split(":"))
            elif key == "scale":
                fields[key] = float(value)
            elif key in ("channel_order", "layout"):
                fields[key] = value.strip().lower()
            else:
                raise ValueError(f"unknown preprocessing key {key!r} in {text!r}; the keys are resize, crop, scale, "
                                 "mean, std, order, layout")
        return cls(**fields)

    def apply(self, image, size: tuple[int, int]) -> np.ndarray:
        """A PIL image -> float32 [C, H, W] (or [H, W, C]); `size` (h, w) is the network's, used where the
        preprocessing names none."""
        from PIL import Image

        image = image.convert("L" if self.channel_order == "gray" else "RGB")
        resize = self.resize if self.resize is not None or self.crop is not None else size
        if isinstance(resize, int):
            shorter = min(image.size)
            resize = (round(image.size[1] * resize / shorter), round(image.size[0] * resize / shorter))
        if resize is not None and tuple(resize) != (image.size[1], image.size[0]):
            image = image.resize((resize[1], resize[0]), Image.BILINEAR)
        pixels = np.asarray(image, np.float32)
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        if self.crop is not None:
            top, left = (pixels.shape[0] - self.crop[0]) // 2, (pixels.shape[1] - self.crop[1]) // 2
            pixels = pixels[top: top + self.crop[0], left: left + self.crop[1]]
        if self.channel_order == "bgr":
            pixels = pixels[:, :, ::-1]
        pixels = (pixels * self.scale - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(pixels if self.layout == "nhwc" else pixels.transpose(2, 0, 1), np.float32)


def image_folder(folder: Path, preprocessing: ImagePreprocessing, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """One preprocessed image at a time from `folder` (sorted by name), each [1, C, H, W] (or [1, H, W, C])."""
    try:
        from PIL import Image
    except ImportError:
        raise BuildError("calibrating on a folder of images needs Pillow: pip install pillow (or give the "
                         "preprocessed inputs as an .npy/.npz file)") from None
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BuildError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for path in files:
        with Image.open(path) as image:
            yield preprocessing.apply(image, size)[None]


def array_file(path: Path) -> Iterator[Sample]:
    """Batches from an .npy file (one input) or an .npz file (arrays named as the inputs, or `input:<name>` as in
    the shared models' reference files); a folder yields every such file in it, sorted by name."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise BuildError(f"calibration folder {path} holds neither images nor .npy/.npz files")
        for file in files:
            yield from array_file(file)
        return
    if path.suffix == ".npy":
        yield np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            yield {key.removeprefix("input:"): arrays[key] for key in arrays.files
                   if not key.startswith(("output:", "note"))}
    else:
        raise BuildError(f"calibration data {path}: give a folder of images, an .npy or an .npz file")


def calibration_source(path: Path, preprocessing: ImagePreprocessing | None,
                       size: tuple[int, int]) -> Iterable[Sample]:
    """The source a path names: a folder of images, or .npy/.npz files (or a folder of them)."""
    path = Path(path)
    if not path.exists():
        raise BuildError(f"calibration data {path} does not exist; give a folder of images or an .npy/.npz file")
    if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return image_folder(path, preprocessing or ImagePreprocessing(), size)
    return array_file(path)
