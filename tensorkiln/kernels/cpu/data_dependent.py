"""Layers whose output sizes depend on the data: NonZero, NonMaxSuppression, Unique. On the meta device
(shape inference) they report `dynamic_size()` for the data-dependent dimension."""
from __future__ import annotations

import torch

from ...ir import ops
from ...ir.infer import dynamic_size
from ..registry import kernel


@kernel(ops.NonZero)
def non_zero(op, inputs):
    x = inputs[0]
    if x.device.type == "meta":
        return [torch.empty((x.dim(), dynamic_size()), dtype=torch.long, device="meta")]
    return [torch.nonzero(x).T.contiguous()]


def _corners(boxes: torch.Tensor, center_point: bool) -> torch.Tensor:
    if center_point:  # [x_center, y_center, width, height]
        center, size = boxes[..., :2], boxes[..., 2:]
        return torch.cat([center - size / 2, center + size / 2], -1)
    # [y1, x1, y2, x2] with the corners in either order
    y1, x1, y2, x2 = boxes.unbind(-1)
    return torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    top_left = torch.maximum(box[:2], others[:, :2])
    bottom_right = torch.minimum(box[2:], others[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area = (box[2:] - box[:2]).prod()
    areas = (others[:, 2:] - others[:, :2]).prod(-1)
    # as onnxruntime: a box of no area, or no overlap, has IoU 0 (0 / 0 would be NaN and suppress the box)
    no_overlap = (area <= 0) | (areas <= 0) | (inter <= 0)
    return torch.where(no_overlap, torch.zeros_like(inter), inter / (area + areas - inter))


def _greedy_nms(boxes, scores, op: ops.NonMaxSuppression) -> list[int]:
    candidates = torch.arange(scores.shape[0], device=scores.device)
    if op.score_threshold is not None:
        candidates = candidates[scores > op.score_threshold]
    # highest score first; ties keep the lower box index first, as onnxruntime does
    order = candidates[torch.sort(scores[candidates], descending=True, stable=True).indices]
    kept: list[int] = []
    while order.numel() and len(kept) < op.max_output_boxes_per_class:
        best = int(order[0])
        kept.append(best)
        rest = order[1:]
        order = rest[_iou(boxes[best], boxes[rest]) <= op.iou_threshold]
    return kept


@kernel(ops.NonMaxSuppression)
def non_max_suppression(op: ops.NonMaxSuppression, inputs):
    boxes, scores = inputs
    if boxes.device.type == "meta":
        return [torch.empty((dynamic_size(), 3), dtype=torch.long, device="meta")]
    corners = _corners(boxes.float(), op.center_point_box)
    selected = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            selected += [(b, c, i) for i in _greedy_nms(corners[b], scores[b, c].float(), op)]
    return [torch.tensor(selected, dtype=torch.long, device=boxes.device).reshape(-1, 3)]


@kernel(ops.Unique)
def unique(op: ops.Unique, inputs):
    x = inputs[0]
    flat = x.reshape(-1) if op.axis is None else x
    if x.device.type == "meta":
        n = dynamic_size()
        shape = (n,) if op.axis is None else tuple(n if i == op.axis % x.dim() else d for i, d in enumerate(x.shape))
        long = dict(dtype=torch.long, device="meta")
        inverse_len = flat.shape[0] if op.axis is None else x.shape[op.axis % x.dim()]
        return [torch.empty(shape, dtype=x.dtype, device="meta"), torch.empty(n, **long),
                torch.empty(inverse_len, **long), torch.empty(n, **long)]
    dim = None if op.axis is None else op.axis % x.dim()
    values, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True, dim=dim)
    length = inverse.numel()
    first = torch.full((counts.numel(),), length, dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(length), "amin")
    if not op.sorted:  # ONNX's unsorted order is the order of first occurrence
        order = torch.argsort(first)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        values = values[order] if dim is None else torch.index_select(values, dim, order)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return [values, first, inverse, counts]
