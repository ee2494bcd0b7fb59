"""RMS normalization (the `rms_norm` layer that recognize_rms_norm builds)."""
from __future__ import annotations

import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel


@kernel(ops.RMSNorm)
def rms_norm(op: ops.RMSNorm, inputs):
    x, scale = (list(inputs) + [None])[:2]
    normalized = tuple(x.shape[op.axis % x.dim():])
    return [F.rms_norm(x, normalized, None if scale is None else scale.expand(normalized), op.epsilon)]
