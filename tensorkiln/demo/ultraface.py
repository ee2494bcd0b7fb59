"""The UltraFace slim-320 detector on the bundled photo: the faces found, the same faces and outputs from
onnxruntime, and the latency of both on this machine."""
from __future__ import annotations

import dataclasses

import numpy as np

from .bundled import ULTRAFACE, ULTRAFACE_ONNX, load_face_image
from .common import DemoSettings, EngineRun, build_engine, engine_run, resolve_device
from .measure import Latency, as_numpy, measure, onnxruntime_peer

IMAGE_WIDTH, IMAGE_HEIGHT = 320, 240
SCORE_THRESHOLD = 0.7  # a face where the face class's score exceeds this
NMS_IOU = 0.3  # boxes overlapping a better one by more than this are the same face
# The model's anchors (the repository's vision/ssd/config/fd_config.py): per feature map, its stride in pixels
# (the map has ceil(image size / stride) cells) and the sizes of its square anchors; box regressions are
# relative to the anchors, scaled by the two variances.
STRIDES = (8, 16, 32, 64)
ANCHOR_SIZES = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))
CENTER_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
# Largest difference from onnxruntime taken as agreement: FP32 on the CPU; on CUDA the convolutions may use
# TF32 tensor cores, which keep 10 bits of mantissa.
TOLERANCE = {"cpu": 1e-4, "cuda": 1e-2}


@dataclasses.dataclass(frozen=True)
class Face:
    left: float  # pixels of the 320x240 image
    top: float
    right: float
    bottom: float
    score: float

    def __str__(self) -> str:
        return (f"({self.left:.0f}, {self.top:.0f})-({self.right:.0f}, {self.bottom:.0f}) px, "
                f"score {self.score:.3f}")


@dataclasses.dataclass(frozen=True)
class UltrafaceReport:
    run: EngineRun
    faces: tuple[Face, ...]
    peer_latency: Latency | None
    peer_faces: tuple[Face, ...] | None
    max_difference: float | None  # the largest difference from onnxruntime's outputs (scores and boxes)
    tolerance: float
    peer_note: str  # why there is no peer, when there is none

    @property
    def outputs_agree(self) -> bool | None:
        return None if self.max_difference is None else self.max_difference <= self.tolerance

    @property
    def faces_agree(self) -> bool | None:
        return None if self.peer_faces is None else _same_faces(self.faces, self.peer_faces)

    def summary_rows(self) -> list[tuple[str, str]]:
        rows = [("faces found", f"{len(self.faces)} (score > {SCORE_THRESHOLD})"),
                *((f"face {index + 1}", str(face)) for index, face in enumerate(self.faces))]
        if self.max_difference is None:
            return rows + [("compared with", self.peer_note)]
        verdict = "agree" if self.outputs_agree else "DIFFER"
        if self.faces_agree:
            same = "the same face" if len(self.faces) == 1 else f"the same {len(self.faces)} faces"
        else:
            same = f"{len(self.peer_faces)} faces: {'; '.join(map(str, self.peer_faces)) or 'none'}"
        return rows + [("vs onnxruntime", f"outputs {verdict}: largest difference {self.max_difference:.2e} "
                                          f"(tolerance {self.tolerance:g}); onnxruntime finds {same}")]


def run_ultraface(settings: DemoSettings) -> UltrafaceReport:
    from ..importers.onnx import parse_onnx

    device = resolve_device(settings.device)
    engine, parse_seconds = build_engine(lambda: parse_onnx(ULTRAFACE_ONNX), device)
    image = preprocess(load_face_image())
    input_name = engine.inputs[0].name
    feed = {input_name: image}
    context = engine.create_execution_context()
    outputs = {name: as_numpy(value) for name, value in context.execute(feed).items()}
    scores, boxes = outputs["scores"], outputs["boxes"]
    faces = detect_faces(scores, boxes)
    latency = measure("tensorkiln", lambda: context.execute(feed), settings.iterations, 1)
    run = engine_run(ULTRAFACE, engine, parse_seconds, latency)
    peer = onnxruntime_peer(ULTRAFACE_ONNX, device)
    if isinstance(peer, str):
        return UltrafaceReport(run, faces, None, None, None, TOLERANCE[device], peer)
    peer_scores, peer_boxes = peer.run(feed)
    difference = max(float(np.abs(scores - peer_scores).max()), float(np.abs(boxes - peer_boxes).max()))
    peer_latency = measure(peer.name, lambda: peer.run(feed), settings.iterations, 1)
    return UltrafaceReport(run, faces, peer_latency, detect_faces(peer_scores, peer_boxes), difference,
                           TOLERANCE[device], "")


def preprocess(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (240, 320, 3) -> float32 (1, 3, 240, 320) as the model was trained: (pixel - 127) / 128."""
    return np.ascontiguousarray(((image.astype(np.float32) - 127) / 128).transpose(2, 0, 1)[None])


def anchors() -> np.ndarray:
    """(4420, 4) anchors as (center x, center y, width, height), fractions of the image, in the model's order."""
    rows = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        columns, lines = -(-IMAGE_WIDTH // stride), -(-IMAGE_HEIGHT // stride)
        for y in range(lines):
            for x in range(columns):
                for size in sizes:
                    # centers spread evenly over the map (for 240 / 32 that is 7.5 rows made 8, not a 32-px grid)
                    rows.append(((x + 0.5) / columns, (y + 0.5) / lines, size / IMAGE_WIDTH, size / IMAGE_HEIGHT))
    return np.clip(np.array(rows, np.float32), 0.0, 1.0)


def decode_boxes(regressions: np.ndarray) -> np.ndarray:
    """The model's box regressions (N, 4) -> corners (left, top, right, bottom) in pixels."""
    prior = anchors()
    centers = regressions[:, :2] * CENTER_VARIANCE * prior[:, 2:] + prior[:, :2]
    sizes = np.exp(regressions[:, 2:] * SIZE_VARIANCE) * prior[:, 2:]
    corners = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    return corners * np.array([IMAGE_WIDTH, IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_HEIGHT], np.float32)


def detect_faces(scores: np.ndarray, regressions: np.ndarray) -> tuple[Face, ...]:
    """Faces from the model's outputs (1, N, 2) and (1, N, 4): scores over the threshold, then greedy NMS."""
    face_scores = scores[0, :, 1]
    keep = face_scores > SCORE_THRESHOLD
    boxes, kept_scores = decode_boxes(regressions[0])[keep], face_scores[keep]
    chosen = []
    for index in np.argsort(-kept_scores):
        if all(_iou(boxes[index], boxes[other]) <= NMS_IOU for other in chosen):
            chosen.append(index)
    return tuple(Face(*(float(v) for v in boxes[index]), float(kept_scores[index])) for index in chosen)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return float(overlap / union) if union > 0 else 0.0


def _same_faces(faces: tuple[Face, ...], others: tuple[Face, ...], pixels: float = 1.0) -> bool:
    """The same number of faces, each within `pixels` of its counterpart (both lists are ordered by score)."""
    def corners(face: Face) -> np.ndarray:
        return np.array([face.left, face.top, face.right, face.bottom])

    return len(faces) == len(others) and all(np.abs(corners(a) - corners(b)).max() <= pixels
                                             for a, b in zip(faces, others))
