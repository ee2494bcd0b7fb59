"""An SSD head (PriorBox + DetectionOutput) built with the network API, against an SSD reference written here
in numpy from Caffe-SSD's PriorBoxLayer and DetectionOutputLayer: NMS ties, confidence threshold, top_k and
keep_top_k."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.plugins import add_plugin

FEATURE, IMAGE = (1, 8, 3, 4), (1, 3, 30, 40)
MIN_SIZE, MAX_SIZE, RATIOS, VARIANCES = 8.0, 16.0, (2.0,), (0.1, 0.1, 0.2, 0.2)
NUM_CLASSES, BATCH = 4, 2


def numpy_priors() -> np.ndarray:
    """[P, 4] normalized corners, as PriorBoxLayer's loops (offset 0.5, step = image / feature map)."""
    (_, _, height, width), (img_h, img_w) = FEATURE, IMAGE[2:]
    step_h, step_w = img_h / height, img_w / width
    boxes = []
    for h in range(height):
        for w in range(width):
            cx, cy = (w + 0.5) * step_w, (h + 0.5) * step_h
            sizes = [(MIN_SIZE, MIN_SIZE), (math.sqrt(MIN_SIZE * MAX_SIZE),) * 2]
            for ratio in (RATIOS[0], 1 / RATIOS[0]):  # flip
                sizes.append((MIN_SIZE * math.sqrt(ratio), MIN_SIZE / math.sqrt(ratio)))
            for bw, bh in sizes:
                boxes.append([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                              (cx + bw / 2) / img_w, (cy + bh / 2) / img_h])
    return np.array(boxes)


def decode(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """CENTER_SIZE decoding with the variances."""
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    cx = VARIANCES[0] * loc[:, 0] * pw + pcx
    cy = VARIANCES[1] * loc[:, 1] * ph + pcy
    w, h = np.exp(VARIANCES[2] * loc[:, 2]) * pw, np.exp(VARIANCES[3] * loc[:, 3]) * ph
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_detections(loc, conf, nms_threshold, top_k, keep_top_k, threshold) -> np.ndarray:
    priors, rows = numpy_priors(), []
    for image in range(loc.shape[0]):
        boxes = decode(loc[image].reshape(-1, 4).astype(np.float64), priors)
        scores = conf[image].reshape(-1, NUM_CLASSES)
        found = []  # (score, label, prior index)
        for label in range(1, NUM_CLASSES):  # label 0 is the background
            candidates = [i for i in range(len(boxes)) if scores[i, label] > threshold]
            candidates.sort(key=lambda i: (-scores[i, label], i))  # equal scores: lower prior index first
            kept = []
            for i in candidates[:top_k]:
                if all(iou(boxes[i], boxes[k]) <= nms_threshold for k in kept):
                    kept.append(i)
            found += [(scores[i, label], label, i) for i in kept]
        found.sort(key=lambda d: (-d[0], d[1], d[2]))  # keep_top_k: equal scores keep lower labels, then indices
        found = sorted(found[:keep_top_k], key=lambda d: (d[1], -d[0], d[2]))
        rows += [[image, label, score, *boxes[i]] for score, label, i in found]
    return np.array(rows, np.float32).reshape(1, 1, -1, 7)


def build_engine(nms_threshold, top_k, keep_top_k, threshold) -> tk.Engine:
    num_priors = numpy_priors().shape[0]
    network = tk.NetworkDefinition("ssd_head")
    feature = network.add_input("feature", tk.DataType.FLOAT, FEATURE)
    image = network.add_input("image", tk.DataType.FLOAT, IMAGE)
    loc = network.add_input("loc", tk.DataType.FLOAT, (BATCH, num_priors * 4))
    conf = network.add_input("conf", tk.DataType.FLOAT, (BATCH, num_priors * NUM_CLASSES))
    priors = add_plugin(network, "PriorBox", [feature, image], dict(
        min_sizes=(MIN_SIZE,), max_sizes=(MAX_SIZE,), aspect_ratios=RATIOS, flip=True, variances=VARIANCES)
    ).get_output(0)
    detections = add_plugin(network, "DetectionOutput", [loc, conf, priors], dict(
        num_classes=NUM_CLASSES, background_label_id=0, nms_threshold=nms_threshold, top_k=top_k,
        keep_top_k=keep_top_k, code_type="CENTER_SIZE", confidence_threshold=threshold),
        output_names=["detections"]).get_output(0)
    network.mark_output(detections)
    engine = tk.Builder().build(network)
    return tk.Runtime().deserialize(engine.serialize())


def ssd_inputs(seed: int):
    rng = np.random.default_rng(seed)
    num_priors = numpy_priors().shape[0]
    loc = (rng.standard_normal((BATCH, num_priors * 4)) * 0.5).astype(np.float32)
    # few distinct scores, so that many candidates tie (in NMS order and at the keep_top_k cut)
    conf = rng.choice(np.array([0.05, 0.3, 0.3, 0.55, 0.55, 0.8], np.float32), (BATCH, num_priors * NUM_CLASSES))
    return {"feature": np.zeros(FEATURE, np.float32), "image": np.zeros(IMAGE, np.float32), "loc": loc, "conf": conf}


def test_prior_box_layout_matches_numpy():
    network = tk.NetworkDefinition("priors")
    feature = network.add_input("feature", tk.DataType.FLOAT, FEATURE)
    image = network.add_input("image", tk.DataType.FLOAT, IMAGE)
    layer = add_plugin(network, "PriorBox", [feature, image], dict(
        min_sizes=(MIN_SIZE,), max_sizes=(MAX_SIZE,), aspect_ratios=RATIOS, variances=VARIANCES),
        output_names=["priors"])
    network.mark_output(layer.get_output(0))
    out = tk.Builder().build(network).create_execution_context().execute(
        {"feature": np.zeros(FEATURE, np.float32), "image": np.zeros(IMAGE, np.float32)})["priors"]
    expected = numpy_priors()
    assert out.shape == (1, 2, expected.size)
    np.testing.assert_allclose(out[0, 0].reshape(-1, 4), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[0, 1].reshape(-1, 4), np.tile(np.float32(VARIANCES), (len(expected), 1)))


@pytest.mark.parametrize("nms_threshold, top_k, keep_top_k, threshold", [
    (0.45, 400, 200, 0.01),  # everything kept that survives NMS
    (0.3, 20, 7, 0.1),  # top_k and keep_top_k both cut through runs of equal scores
    (0.6, 5, 3, 0.5),
])
def test_detection_output_matches_numpy_reference(nms_threshold, top_k, keep_top_k, threshold):
    engine = build_engine(nms_threshold, top_k, keep_top_k, threshold)
    assert engine.plan.outputs[0].shape == (1, 1, -1, 7)  # the detection count is known only at run time
    for seed in range(3):
        feed = ssd_inputs(seed)
        got = engine.create_execution_context().execute(feed)["detections"]
        expected = reference_detections(feed["loc"], feed["conf"], nms_threshold, top_k, keep_top_k, threshold)
        assert got.shape == expected.shape, (seed, got.shape, expected.shape)
        np.testing.assert_array_equal(got[..., :2], expected[..., :2])  # images and labels, in order
        np.testing.assert_allclose(got[..., 2:], expected[..., 2:], rtol=1e-5, atol=1e-6)
        assert len(set(map(tuple, got[0, 0, :, 2:3].tolist()))) < got.shape[2]  # ties did occur


def test_detection_output_without_detections_gives_one_row_of_minus_one_per_image():
    engine = build_engine(0.45, 100, 10, 0.9)  # every score is below the threshold
    got = engine.create_execution_context().execute(ssd_inputs(0))["detections"]
    expected = np.full((1, 1, BATCH, 7), -1, np.float32)
    expected[0, 0, :, 0] = np.arange(BATCH)
    np.testing.assert_array_equal(got, expected)
