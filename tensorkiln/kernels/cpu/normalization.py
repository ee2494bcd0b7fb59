"""Group and instance normalization."""
from __future__ import annotations

import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel


@kernel(ops.GroupNorm)
def group_norm(op: ops.GroupNorm, inputs):
    x, scale, bias = (list(inputs) + [None])[:3]
    return [F.group_norm(x, op.num_groups, scale, bias, op.epsilon)]
