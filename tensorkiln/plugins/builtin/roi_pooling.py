"""ROIPooling (Fast/Faster R-CNN): max pooling of every region of interest into a fixed grid of bins, as
Caffe's ROIPoolingLayer (region corners rounded half away from zero, bins by floor/ceil, empty bins 0)."""
from __future__ import annotations

import dataclasses
import math

import torch

from ..base import Plugin, TensorDesc, expect_inputs
from ..registry import register_plugin


@register_plugin("ROIPooling")
class ROIPooling(Plugin):
    """inputs: features [N, C, H, W], rois [R, 5] (image index, x1, y1, x2, y2 in input-image pixels);
    output [R, C, pooled_h, pooled_w]."""

    @dataclasses.dataclass(frozen=True)
    class Params:
        pooled_h: int = 7
        pooled_w: int = 7
        spatial_scale: float = 1.0 / 16  # feature-map cells per input pixel

    def output_specs(self, inputs):
        expect_inputs(self, inputs, (2,))
        features, rois = inputs
        if len(features.shape) != 4 or len(rois.shape) != 2 or rois.shape[1] != 5:
            raise ValueError(f"ROIPooling takes features [N, C, H, W] and rois [R, 5], got {features.shape} and "
                             f"{rois.shape}")
        return [TensorDesc((rois.shape[0], features.shape[1], self.params.pooled_h, self.params.pooled_w),
                           features.dtype)]

    def forward(self, inputs):
        features, rois = inputs
        p = self.params
        height, width = features.shape[2:]
        output = features.new_zeros((rois.shape[0], features.shape[1], p.pooled_h, p.pooled_w))
        for r, roi in enumerate(rois.tolist()):
            x1, y1, x2, y2 = (_round_half_away(v * p.spatial_scale) for v in roi[1:])
            bin_h = max(y2 - y1 + 1, 1) / p.pooled_h
            bin_w = max(x2 - x1 + 1, 1) / p.pooled_w
            image = features[int(roi[0])]
            for ph in range(p.pooled_h):
                h0 = min(max(math.floor(ph * bin_h) + y1, 0), height)
                h1 = min(max(math.ceil((ph + 1) * bin_h) + y1, 0), height)
                for pw in range(p.pooled_w):
                    w0 = min(max(math.floor(pw * bin_w) + x1, 0), width)
                    w1 = min(max(math.ceil((pw + 1) * bin_w) + x1, 0), width)
                    if h1 > h0 and w1 > w0:
                        output[r, :, ph, pw] = image[:, h0:h1, w0:w1].amax(dim=(1, 2))
        return [output]


def _round_half_away(value: float) -> int:
    """C's round(): halves away from zero (Python's round goes to even)."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)
