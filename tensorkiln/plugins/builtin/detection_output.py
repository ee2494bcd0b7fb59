"""DetectionOutput (SSD): decode the location predictions against the priors, run per-class NMS, keep the
best detections; Caffe-SSD's DetectionOutputLayer.

Output [1, 1, D, 7], one row per detection: (image index, label, score, xmin, ymin, xmax, ymax), images in
order, then labels in increasing order, then scores decreasing. D is known only at run time; with no
detection at all, one row per image of -1 but the image index (as Caffe).

Ties: candidates of equal score keep the order of their prior index (Caffe's stable sort), and where
keep_top_k cuts through equal scores, the detections of lower labels, then of lower prior index, win.
"""
from __future__ import annotations

import dataclasses
import enum

import torch

from ...ir.dtypes import DataType
from ..base import DYNAMIC, Plugin, TensorDesc, expect_inputs
from ..registry import register_plugin
from .boxes import greedy_nms, sort_descending


class CodeType(enum.Enum):
    """How box offsets are encoded relative to their prior (Caffe's PriorBoxParameter.CodeType)."""
    CORNER = "CORNER"
    CENTER_SIZE = "CENTER_SIZE"
    CORNER_SIZE = "CORNER_SIZE"


@register_plugin("DetectionOutput")
class DetectionOutput(Plugin):
    """inputs: loc [N, P * L * 4] (L = 1 when share_location, else num_classes), conf [N, P * num_classes]
    (probabilities), priors [1, 2, P * 4] (PriorBox's layout)."""
    DATA_DEPENDENT = True

    @dataclasses.dataclass(frozen=True)
    class Params:
        num_classes: int
        share_location: bool = True
        background_label_id: int = 0  # -1: no background class
        nms_threshold: float = 0.3
        top_k: int = -1  # candidates per class before NMS; -1: all
        eta: float = 1.0  # adaptive NMS when below 1
        code_type: CodeType = CodeType.CORNER
        variance_encoded_in_target: bool = False
        keep_top_k: int = -1  # detections per image after NMS; -1: all
        confidence_threshold: float | None = None  # candidates need a score above it; None: any score

    def output_specs(self, inputs):
        expect_inputs(self, inputs, (3,))
        loc, conf, priors = inputs
        num_priors = priors.shape[-1] // 4 if len(priors.shape) == 3 else -1
        loc_classes = 1 if self.params.share_location else self.params.num_classes
        if len(priors.shape) != 3 or priors.shape[1] != 2 or priors.shape[2] % 4:
            raise ValueError(f"DetectionOutput priors must be [1, 2, P * 4] (PriorBox), got {priors.shape}")
        if _numel(loc.shape[1:]) != num_priors * loc_classes * 4:
            raise ValueError(f"DetectionOutput loc has shape {loc.shape}; {num_priors} priors and {loc_classes} "
                             f"location classes need {num_priors * loc_classes * 4} values per image")
        if _numel(conf.shape[1:]) != num_priors * self.params.num_classes or conf.shape[0] != loc.shape[0]:
            raise ValueError(f"DetectionOutput conf has shape {conf.shape}; {num_priors} priors and "
                             f"{self.params.num_classes} classes need {num_priors * self.params.num_classes} "
                             f"values per image, for {loc.shape[0]} images")
        return [TensorDesc((1, 1, DYNAMIC, 7), DataType.FLOAT)]

    def forward(self, inputs):
        loc, conf, priors = inputs
        p = self.params
        batch, num_priors = loc.shape[0], priors.shape[-1] // 4
        loc_classes = 1 if p.share_location else p.num_classes
        prior_boxes = priors[0, 0].reshape(num_priors, 4).float()
        variances = priors[0, 1].reshape(num_priors, 4).float()
        locations = loc.reshape(batch, num_priors, loc_classes, 4).float()
        scores = conf.reshape(batch, num_priors, p.num_classes).float()
        rows = []
        for image in range(batch):
            decoded = decode_boxes(locations[image], prior_boxes.unsqueeze(1), variances.unsqueeze(1), p)
            for label, index in self._detections(decoded, scores[image]):
                box = decoded[index, 0 if p.share_location else label]
                rows.append(torch.cat([torch.tensor([image, label], dtype=torch.float32, device=loc.device),
                                       scores[image, index, label].reshape(1), box]))
        if not rows:  # Caffe's "no detection" result: one row of -1 per image
            empty = torch.full((batch, 7), -1.0, device=loc.device)
            empty[:, 0] = torch.arange(batch, dtype=torch.float32, device=loc.device)
            return [empty.reshape(1, 1, batch, 7)]
        return [torch.stack(rows).reshape(1, 1, len(rows), 7)]

    def _detections(self, decoded: torch.Tensor, scores: torch.Tensor) -> list[tuple[int, int]]:
        """(label, prior index) of the detections of one image, in output order."""
        p = self.params
        found: list[tuple[float, int, int]] = []  # score, label, index; labels increasing, scores decreasing
        for label in range(p.num_classes):
            if label == p.background_label_id:
                continue
            class_scores = scores[:, label]
            order = sort_descending(class_scores)
            if p.confidence_threshold is not None:
                order = order[class_scores[order] > p.confidence_threshold]
            if p.top_k > -1:
                order = order[:p.top_k]
            boxes = decoded[:, 0 if p.share_location else label]
            kept = greedy_nms(boxes, order, p.nms_threshold, p.eta)
            found.extend((float(class_scores[i]), label, i) for i in kept)
        if p.keep_top_k > -1 and len(found) > p.keep_top_k:
            best = sorted(range(len(found)), key=lambda k: -found[k][0])[:p.keep_top_k]  # stable: ties keep order
            found = sorted((found[k] for k in best), key=lambda d: d[1])  # back to label order, stable within
        return [(label, index) for _, label, index in found]


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor, p) -> torch.Tensor:
    """Boxes (xmin, ymin, xmax, ymax) from offsets `loc` [..., 4] relative to `priors` [..., 4]."""
    if p.variance_encoded_in_target:
        variances = torch.ones_like(variances)
    prior_w, prior_h = priors[..., 2] - priors[..., 0], priors[..., 3] - priors[..., 1]
    if p.code_type is CodeType.CORNER:
        return priors + variances * loc
    if p.code_type is CodeType.CORNER_SIZE:
        scale = torch.stack([prior_w, prior_h, prior_w, prior_h], dim=-1)
        return priors + variances * loc * scale
    center_x = variances[..., 0] * loc[..., 0] * prior_w + (priors[..., 0] + priors[..., 2]) / 2
    center_y = variances[..., 1] * loc[..., 1] * prior_h + (priors[..., 1] + priors[..., 3]) / 2
    width = torch.exp(variances[..., 2] * loc[..., 2]) * prior_w
    height = torch.exp(variances[..., 3] * loc[..., 3]) * prior_h
    return torch.stack([center_x - width / 2, center_y - height / 2, center_x + width / 2, center_y + height / 2],
                       dim=-1)


def _numel(shape) -> int:
    count = 1
    for d in shape:
        count *= d
    return count
