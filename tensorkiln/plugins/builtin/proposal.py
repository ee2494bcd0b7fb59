"""Proposal (Faster R-CNN's region proposal layer, as py-faster-rcnn's ProposalLayer): anchors at every
feature-map cell, shifted by the predicted deltas, clipped to the image, small boxes dropped, the best
pre_nms_top_n scored ones suppressed by NMS, the best post_nms_top_n of those kept.

Boxes are in inclusive pixel coordinates (a box from x1 to x2 is x2 - x1 + 1 wide), as py-faster-rcnn.
"""
from __future__ import annotations

import dataclasses

import torch

from ...ir.dtypes import DataType
from ..base import DYNAMIC, Plugin, TensorDesc, expect_inputs
from ..registry import register_plugin
from .boxes import box_areas, greedy_nms, sort_descending


@register_plugin("Proposal")
class Proposal(Plugin):
    """inputs: objectness [N, 2A, H, W] (background scores for the A anchors, then foreground scores),
    box deltas [N, 4A, H, W], image info [N, 3] (height, width, scale). outputs: rois [R, 5] (image index,
    x1, y1, x2, y2) and their scores [R, 1]; R is known only at run time."""
    DATA_DEPENDENT = True

    @dataclasses.dataclass(frozen=True)
    class Params:
        feat_stride: int = 16
        base_size: int = 16
        scales: tuple[float, ...] = (8.0, 16.0, 32.0)
        ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
        pre_nms_top_n: int = 6000  # 0: all
        post_nms_top_n: int = 300  # 0: all
        nms_threshold: float = 0.7
        min_size: float = 16.0  # in pixels of the input image (scaled by the image info's scale)

    def __init__(self, params):
        super().__init__(params)
        self.anchors = generate_anchors(params.base_size, params.ratios, params.scales)

    def output_specs(self, inputs):
        expect_inputs(self, inputs, (3,))
        scores, deltas, info = inputs
        anchors = len(self.anchors)
        if len(scores.shape) != 4 or scores.shape[1] != 2 * anchors:
            raise ValueError(f"Proposal scores must be [N, {2 * anchors}, H, W] for {anchors} anchors, "
                             f"got {scores.shape}")
        if tuple(deltas.shape) != (scores.shape[0], 4 * anchors, *scores.shape[2:]):
            raise ValueError(f"Proposal deltas must be [N, {4 * anchors}, H, W] like the scores, got {deltas.shape}")
        if len(info.shape) != 2 or info.shape[1] < 3:
            raise ValueError(f"Proposal image info must be [N, 3] (height, width, scale), got {info.shape}")
        return [TensorDesc((DYNAMIC, 5), DataType.FLOAT), TensorDesc((DYNAMIC, 1), DataType.FLOAT)]

    def forward(self, inputs):
        scores, deltas, info = inputs
        rois, kept_scores = [], []
        for image in range(scores.shape[0]):
            boxes, box_scores = self._propose(scores[image].float(), deltas[image].float(), info[image].float())
            index = torch.full((len(boxes), 1), float(image), device=boxes.device)
            rois.append(torch.cat([index, boxes], dim=1))
            kept_scores.append(box_scores.reshape(-1, 1))
        return [torch.cat(rois), torch.cat(kept_scores)]

    def _propose(self, scores, deltas, info):
        p, num_anchors = self.params, len(self.anchors)
        height, width = scores.shape[1:]
        anchors = self.anchors.to(scores.device)
        shift_x = torch.arange(width, dtype=torch.float32, device=scores.device) * p.feat_stride
        shift_y = torch.arange(height, dtype=torch.float32, device=scores.device) * p.feat_stride
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
        shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
        all_anchors = (anchors.reshape(1, num_anchors, 4) + shifts).reshape(-1, 4)  # cell-major, then anchor
        foreground = scores[num_anchors:].permute(1, 2, 0).reshape(-1)
        deltas = deltas.permute(1, 2, 0).reshape(-1, 4)
        boxes = clip_boxes(apply_deltas(all_anchors, deltas), info[0], info[1])
        min_size = p.min_size * info[2]
        keep = ((boxes[:, 2] - boxes[:, 0] + 1) >= min_size) & ((boxes[:, 3] - boxes[:, 1] + 1) >= min_size)
        boxes, foreground = boxes[keep], foreground[keep]
        order = sort_descending(foreground)
        if p.pre_nms_top_n > 0:
            order = order[:p.pre_nms_top_n]
        kept = greedy_nms(boxes, order, p.nms_threshold, pixel_offset=1.0)
        if p.post_nms_top_n > 0:
            kept = kept[:p.post_nms_top_n]
        kept_index = torch.tensor(kept, dtype=torch.long, device=boxes.device)
        return boxes[kept_index], foreground[kept_index]


def generate_anchors(base_size: int, ratios, scales) -> torch.Tensor:
    """py-faster-rcnn's anchors [len(ratios) * len(scales), 4] around the cell at (0, 0): for every ratio,
    the base box reshaped to that aspect (sides rounded half to even, as numpy), then scaled."""
    base = torch.tensor([0.0, 0.0, base_size - 1.0, base_size - 1.0], dtype=torch.float64)
    width, height = base[2] - base[0] + 1, base[3] - base[1] + 1
    center_x, center_y = base[0] + 0.5 * (width - 1), base[1] + 0.5 * (height - 1)
    ratios = torch.tensor(ratios, dtype=torch.float64)
    widths = torch.round(torch.sqrt(width * height / ratios))
    heights = torch.round(widths * ratios)
    scales = torch.tensor(scales, dtype=torch.float64)
    widths = (widths.reshape(-1, 1) * scales).reshape(-1)
    heights = (heights.reshape(-1, 1) * scales).reshape(-1)
    return torch.stack([center_x - 0.5 * (widths - 1), center_y - 0.5 * (heights - 1),
                        center_x + 0.5 * (widths - 1), center_y + 0.5 * (heights - 1)], dim=1).float()


def apply_deltas(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """py-faster-rcnn's bbox_transform_inv: center offsets scaled by the box size, log-space size changes."""
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    center_x = boxes[:, 0] + 0.5 * widths
    center_y = boxes[:, 1] + 0.5 * heights
    new_x = deltas[:, 0] * widths + center_x
    new_y = deltas[:, 1] * heights + center_y
    new_w = torch.exp(deltas[:, 2]) * widths
    new_h = torch.exp(deltas[:, 3]) * heights
    return torch.stack([new_x - 0.5 * new_w, new_y - 0.5 * new_h, new_x + 0.5 * new_w, new_y + 0.5 * new_h], dim=1)


def clip_boxes(boxes: torch.Tensor, height, width) -> torch.Tensor:
    limits = torch.stack([width - 1, height - 1, width - 1, height - 1]).to(boxes.dtype)
    return torch.minimum(boxes, limits).clamp(min=0)


__all__ = ["Proposal", "generate_anchors", "apply_deltas", "clip_boxes", "box_areas"]
