"""RMS normalization (the `rms_norm` layer that recognize_rms_norm builds)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel


@kernel(ops.RMSNorm)
def rms_norm(op: ops.RMSNorm, inputs):
    x, scale = (list(inputs) + [None])[:2]
    axis = op.axis % x.dim()
    normalized = tuple(x.shape[axis:])
    if x.device.type != "cuda":
        return [F.rms_norm(x, normalized, None if scale is None else scale.expand(normalized), op.epsilon)]
    # PyTorch's fused CUDA kernel makes a whole row NaN where it holds an Inf (measured on an H200, torch 2.11);
    # the graph's own formula x / sqrt(mean(x^2) + eps) gives 0 for the finite values there, as onnxruntime does
    # (in float32, as the fused kernel accumulates: x * x of half values overflows past 256)
    wide = x.float()
    mean_square = torch.mean(wide * wide, dim=tuple(range(axis, x.dim())), keepdim=True)
    out = wide / torch.sqrt(mean_square + op.epsilon)
    return [(out if scale is None else out * scale).to(x.dtype)]
