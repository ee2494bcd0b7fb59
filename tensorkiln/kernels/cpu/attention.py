"""Scaled dot-product attention (the `attention` layer that recognize_attention builds)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel


@kernel(ops.Attention)
def attention(op: ops.Attention, inputs):
    q, k, v, mask = (list(inputs) + [None])[:4]
    mask = mask if op.has_mask else None
    causal = op.causal
    if causal and mask is not None:  # PyTorch takes one or the other: fold the causal part into the mask
        above = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
        if mask.dtype == torch.bool:
            mask = mask & ~above
        else:
            mask = mask + torch.zeros(above.shape, dtype=mask.dtype, device=q.device).masked_fill(above, float("-inf"))
        causal = False
    # PyTorch picks its fused CPU (flash) or math kernel; both add a float mask to the scaled scores
    return [F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=op.scale)]
