"""Col2Im, AffineGrid, MaxUnpool, RoiAlign and DeformConv: the image-geometry operators of ONNX."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel


@kernel(ops.Col2Im)
def col2im(op: ops.Col2Im, inputs):
    x = inputs[0]
    n, rank = x.shape[0], len(op.image_shape)
    channels = x.shape[1] // math.prod(op.block_shape)
    padded = [size + op.pads[i] + op.pads[rank + i] for i, size in enumerate(op.image_shape)]
    blocks = [(p - (d * (k - 1) + 1)) // s + 1 for p, d, k, s in zip(padded, op.dilations, op.block_shape, op.strides)]
    columns = x.reshape(n, channels, math.prod(op.block_shape), *blocks)
    out = torch.zeros(n, channels, *padded, dtype=x.dtype, device=x.device)
    for k, offset in enumerate(itertools.product(*(range(b) for b in op.block_shape))):
        # every block's element `offset` lands on a strided grid of the padded image
        window = tuple(slice(o * d, o * d + s * (b - 1) + 1, s)
                       for o, d, s, b in zip(offset, op.dilations, op.strides, blocks))
        out[(slice(None), slice(None), *window)] += columns[:, :, k]
    crop = tuple(slice(op.pads[i], op.pads[i] + size) for i, size in enumerate(op.image_shape))
    return [out[(slice(None), slice(None), *crop)]]


@kernel(ops.AffineGrid)
def affine_grid(op: ops.AffineGrid, inputs):
    theta = inputs[0]
    compute = theta if theta.dtype in (torch.float32, torch.float64) else theta.float()
    return [F.affine_grid(compute, list(op.size), align_corners=op.align_corners).to(theta.dtype)]


@kernel(ops.MaxUnpool)
def max_unpool(op: ops.MaxUnpool, inputs):
    x, indices = inputs[0], inputs[1]
    flat = torch.zeros(math.prod(op.pooled_shape), dtype=x.dtype, device=x.device)
    y = flat.scatter(0, indices.reshape(-1).long(), x.reshape(-1)).reshape(op.pooled_shape)
    grow = []
    for pooled, wanted in zip(reversed(op.pooled_shape), reversed(op.output_shape)):
        grow += [0, wanted - pooled]
    return [F.pad(y, grow)]


def _bilinear_samples(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """RoiAlign's bilinear samples of image [C, H, W] at points y, x [P]: [4, C, P] weighted corner values.
    Points more than a pixel outside the image give zeros (ONNX and Caffe2 semantics)."""
    height, width = image.shape[-2:]
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.floor().long().clamp(max=height - 1), x.floor().long().clamp(max=width - 1)
    y = torch.where(y_low >= height - 1, y_low.to(y.dtype), y)
    x = torch.where(x_low >= width - 1, x_low.to(x.dtype), x)
    y_high, x_high = (y_low + 1).clamp(max=height - 1), (x_low + 1).clamp(max=width - 1)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    corners = [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]
    return torch.stack([image[:, yi, xi] * torch.where(outside, 0.0, w).to(image.dtype) for yi, xi, w in corners])


def _roi_align_one(op: ops.RoiAlign, image: torch.Tensor, roi: list[float]) -> torch.Tensor:
    offset = 0.5 if op.half_pixel else 0.0
    x0, y0, x1, y1 = (v * op.spatial_scale - offset for v in roi)
    width, height = x1 - x0, y1 - y0
    if not op.half_pixel:  # legacy mode: malformed ROIs become 1x1
        width, height = max(width, 1.0), max(height, 1.0)
    bin_h, bin_w = height / op.output_height, width / op.output_width
    grid_h = op.sampling_ratio if op.sampling_ratio > 0 else int(math.ceil(height / op.output_height))
    grid_w = op.sampling_ratio if op.sampling_ratio > 0 else int(math.ceil(width / op.output_width))
    dt = torch.float64
    iy = (torch.arange(grid_h, dtype=dt) + 0.5) * bin_h / max(grid_h, 1)
    ix = (torch.arange(grid_w, dtype=dt) + 0.5) * bin_w / max(grid_w, 1)
    ys = y0 + torch.arange(op.output_height, dtype=dt).reshape(-1, 1) * bin_h + iy  # [out_h, grid_h]
    xs = x0 + torch.arange(op.output_width, dtype=dt).reshape(-1, 1) * bin_w + ix  # [out_w, grid_w]
    y = ys.reshape(op.output_height, 1, grid_h, 1).expand(-1, op.output_width, -1, grid_w).reshape(-1)
    x = xs.reshape(1, op.output_width, 1, grid_w).expand(op.output_height, -1, grid_h, -1).reshape(-1)
    samples = _bilinear_samples(image.double(), y, x).reshape(4, image.shape[0], op.output_height,
                                                              op.output_width, grid_h * grid_w)
    if op.mode == "max":  # ONNX's max mode: the largest weighted corner over every sample
        pooled = samples.amax(dim=0).amax(dim=-1) if grid_h * grid_w else samples.sum(dim=(0, -1))
    else:
        pooled = samples.sum(dim=0).sum(dim=-1) / max(grid_h * grid_w, 1)
    return pooled.to(image.dtype)


@kernel(ops.RoiAlign)
def roi_align(op: ops.RoiAlign, inputs):
    x, rois, batch_indices = inputs
    shape = (rois.shape[0], x.shape[1], op.output_height, op.output_width)
    if x.device.type == "meta":  # each ROI's sampling grid depends on its coordinates: sized by data
        return [torch.empty(shape, dtype=x.dtype, device="meta")]
    pooled = [_roi_align_one(op, x[int(b)], [float(v) for v in roi]) for roi, b in zip(rois, batch_indices)]
    return [torch.stack(pooled) if pooled else torch.empty(shape, dtype=x.dtype, device=x.device)]


def _deform_columns(op: ops.DeformConv, x, offset, mask, kernel_hw, out_hw):
    """Bilinear samples of x at each kernel tap moved by its offset: [N, C, kH * kW, oH, oW]."""
    n, c, height, width = x.shape
    groups, taps = op.offset_groups, kernel_hw[0] * kernel_hw[1]
    offset = offset.reshape(n, groups, taps, 2, *out_hw)
    mask = None if mask is None else mask.reshape(n, groups, taps, *out_hw)
    oy = torch.arange(out_hw[0], dtype=x.dtype).reshape(-1, 1) * op.stride[0] - op.pads[0]
    ox = torch.arange(out_hw[1], dtype=x.dtype).reshape(1, -1) * op.stride[1] - op.pads[1]
    grouped = x.reshape(n * groups, c // groups, height, width)
    columns = []
    for tap, (i, j) in enumerate(itertools.product(range(kernel_hw[0]), range(kernel_hw[1]))):
        y = oy + i * op.dilation[0] + offset[:, :, tap, 0]  # [N, G, oH, oW]
        x_pos = ox + j * op.dilation[1] + offset[:, :, tap, 1]
        # grid_sample with align_corners=True maps -1 and 1 to the centres of the first and last pixels
        grid = torch.stack([2 * x_pos / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], dim=-1)
        sample = F.grid_sample(grouped, grid.reshape(n * groups, *out_hw, 2), mode="bilinear",
                               padding_mode="zeros", align_corners=True).reshape(n, groups, c // groups, *out_hw)
        if mask is not None:
            sample = sample * mask[:, :, tap].unsqueeze(2)
        columns.append(sample.reshape(n, c, *out_hw))
    return torch.stack(columns, dim=2)


@kernel(ops.DeformConv)
def deform_conv(op: ops.DeformConv, inputs):
    x, weight, offset, bias, mask = (list(inputs) + [None] * 5)[:5]
    out_hw = tuple(offset.shape[2:])
    n, out_channels = x.shape[0], weight.shape[0]
    if x.device.type == "meta":
        return [torch.empty((n, out_channels, *out_hw), dtype=x.dtype, device="meta")]
    dt = torch.float64  # the samples' positions are fractional: keep their rounding out of the comparison
    columns = _deform_columns(op, x.to(dt), offset.to(dt), None if mask is None else mask.to(dt),
                              tuple(weight.shape[2:]), out_hw)
    columns = columns.reshape(n, op.groups, -1, out_hw[0] * out_hw[1])
    w = weight.to(dt).reshape(op.groups, out_channels // op.groups, -1)
    y = torch.einsum("gok,ngkl->ngol", w, columns).reshape(n, out_channels, *out_hw)
    if bias is not None:
        y = y + bias.to(dt).reshape(1, -1, 1, 1)
    return [y.to(x.dtype)]


def _round_half_away(value: float) -> int:
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def _roi_bins(start: int, end: int, pooled: int, limit: int) -> list[tuple[int, int]]:
    """[begin, end) pixel ranges of each bin along one axis, clipped to the image (possibly empty)."""
    size = max(end - start + 1, 1)
    return [(min(max(start + math.floor(i * size / pooled), 0), limit),
             min(max(start + math.ceil((i + 1) * size / pooled), 0), limit)) for i in range(pooled)]


@kernel(ops.MaxRoiPool)
def max_roi_pool(op: ops.MaxRoiPool, inputs):
    x, rois = inputs
    shape = (rois.shape[0], x.shape[1], op.pooled_height, op.pooled_width)
    if x.device.type == "meta":
        return [torch.empty(shape, dtype=x.dtype, device="meta")]
    out = torch.zeros(shape, dtype=x.dtype, device=x.device)  # an empty bin gives 0
    for r, (batch, *corners) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (_round_half_away(v * op.spatial_scale) for v in corners)
        rows = _roi_bins(y1, y2, op.pooled_height, x.shape[2])
        columns = _roi_bins(x1, x2, op.pooled_width, x.shape[3])
        for i, (top, bottom) in enumerate(rows):
            for j, (left, right) in enumerate(columns):
                if bottom > top and right > left:
                    out[r, :, i, j] = x[int(batch), :, top:bottom, left:right].amax(dim=(-2, -1))
    return [out]
