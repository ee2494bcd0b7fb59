"""Box arithmetic shared by the detection plugins: overlaps and greedy non-maximum suppression."""
from __future__ import annotations

import torch


def box_areas(boxes: torch.Tensor, pixel_offset: float = 0.0) -> torch.Tensor:
    """Areas of [..., 4] boxes (x1, y1, x2, y2); inverted boxes have area 0. `pixel_offset` is 1 for boxes in
    inclusive pixel coordinates (Faster R-CNN), 0 for normalized ones (SSD)."""
    width = boxes[..., 2] - boxes[..., 0] + pixel_offset
    height = boxes[..., 3] - boxes[..., 1] + pixel_offset
    inverted = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    return torch.where(inverted, torch.zeros_like(width), width * height)


def overlaps(box: torch.Tensor, others: torch.Tensor, pixel_offset: float = 0.0) -> torch.Tensor:
    """Intersection over union of one box [4] with boxes [M, 4]; 0 where they do not intersect."""
    width = torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0]) + pixel_offset
    height = torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1]) + pixel_offset
    intersect = width * height
    union = box_areas(box, pixel_offset) + box_areas(others, pixel_offset) - intersect
    iou = intersect / union
    return torch.where((width > 0) & (height > 0), iou, torch.zeros_like(iou))


def greedy_nms(boxes: torch.Tensor, order: torch.Tensor, threshold: float, eta: float = 1.0,
               pixel_offset: float = 0.0) -> list[int]:
    """Indices (into `boxes`) kept by greedy NMS over the candidates `order` (best first): a candidate is kept
    when its overlap with every box kept so far is at most the threshold. With `eta` < 1 the threshold
    shrinks by eta after each kept box while above 0.5 (Caffe's adaptive NMS)."""
    if eta >= 1.0:  # the usual form: each kept box removes the candidates it suppresses, all at once
        kept: list[int] = []
        while order.numel():
            best = int(order[0])
            kept.append(best)
            rest = order[1:]
            order = rest[overlaps(boxes[best], boxes[rest], pixel_offset) <= threshold]
        return kept
    kept_list: list[int] = []
    for index in order.tolist():
        if not kept_list or bool((overlaps(boxes[index], boxes[kept_list], pixel_offset) <= threshold).all()):
            kept_list.append(index)
            if threshold > 0.5:
                threshold *= eta
    return kept_list


def sort_descending(scores: torch.Tensor) -> torch.Tensor:
    """Indices of `scores` from the highest; equal scores keep their index order (Caffe's stable_sort)."""
    return torch.sort(scores, descending=True, stable=True).indices
