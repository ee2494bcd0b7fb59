"""Scaled dot-product attention (the `attention` layer that recognize_attention builds).

NaN and Inf give what the ONNX graph the layer replaces gives (MatMul, scale, mask, Softmax, MatMul; onnxruntime
runs that graph): PyTorch's fused CPU attention does not. It drops a query row whose scores are all NaN to zeros,
and returns zeros for a row whose every key is masked, where Softmax of a row of -inf is NaN. So on the CPU, inputs
that hold NaN or Inf (or are large enough for a score to overflow) run the graph's own formula; on other devices
(this is also the portable CUDA tactic, which must not synchronize inside a CUDA graph) the fused kernel runs, and
fully masked rows are set to NaN either way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel

_FLOAT32_MAX = 3.4e38


@kernel(ops.Attention)
def attention(op: ops.Attention, inputs):
    q, k, v, mask = (list(inputs) + [None])[:4]
    if q.device.type == "cpu" and q.dtype in (torch.float16, torch.bfloat16):
        # in FP32, rounded once: PyTorch's 16-bit CPU attention strays further from the graph's own 16-bit steps
        # (the ONNX conformance cases of Attention in FP16 fail at rtol 1e-3 with it)
        wide = [None if t is None or t.dtype == torch.bool else t.float() for t in inputs]
        return [attention(op, wide)[0].to(q.dtype)]
    mask = mask if op.has_mask else None
    if op.grouped_kv:  # each K/V head serves Hq / Hkv consecutive query heads
        k, v = _repeat_heads(k, q), _repeat_heads(v, q)
    causal = op.causal
    if causal and mask is not None:  # PyTorch takes one or the other: fold the causal part into the mask
        above = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
        if mask.dtype == torch.bool:
            mask = mask & ~above
        else:
            mask = mask + torch.zeros(above.shape, dtype=mask.dtype, device=q.device).masked_fill(above, float("-inf"))
        causal = False
    if q.device.type == "cpu" and not _finite_scores(q, k, v, mask, op.scale):
        return [_unfused(q, k, v, mask, causal, op.scale, op.nan_to_zero)]
    # PyTorch picks its fused CPU (flash) or math kernel; both add a float mask to the scaled scores
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=op.scale)
    if mask is not None:
        out = _masked_rows_to(out, mask, 0.0 if op.nan_to_zero else float("nan"))
    return [out]


def _repeat_heads(kv: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """K or V with its heads (dim -3) repeated to q's: kv head j serves query heads j * g .. (j + 1) * g - 1."""
    if kv.dim() < 3 or q.dim() < 3 or kv.shape[-3] == 0 or q.shape[-3] % kv.shape[-3]:
        raise ValueError(f"grouped K/V heads: {tuple(q.shape)} queries need a K/V head count dividing "
                         f"{q.shape[-3] if q.dim() >= 3 else 'their head dim'}, not {tuple(kv.shape)}")
    return kv.repeat_interleave(q.shape[-3] // kv.shape[-3], dim=-3)


def _finite_scores(q, k, v, mask, scale: float) -> bool:
    """Whether every score and value is finite (so the fused kernel computes what the graph computes): no NaN or Inf
    in q, k, v; no score past float32's range (|q| max * |k| max * D * scale bounds them); a mask without NaN or +Inf
    (its -inf are what masking is). Three max-norms and a max: a small fraction of the attention's own work."""
    if q.numel() == 0 or k.numel() == 0 or v.numel() == 0:
        return True
    norms = [float(torch.linalg.vector_norm(t, math.inf)) for t in (q, k, v)]
    if not all(math.isfinite(n) for n in norms) or norms[0] * norms[1] * q.shape[-1] * abs(scale) >= _FLOAT32_MAX:
        return False
    return mask is None or mask.dtype == torch.bool or mask.numel() == 0 or bool(mask.amax() < math.inf)


def _unfused(q, k, v, mask, causal: bool, scale: float, nan_to_zero: bool = False) -> torch.Tensor:
    """softmax(q @ k^T * scale + mask) @ v, as the ONNX graph computes it (NaN probabilities zeroed on request)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1),
                                    float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probabilities = torch.softmax(scores, dim=-1)
    if nan_to_zero:
        probabilities = probabilities.nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)
    return torch.matmul(probabilities, v)


def _masked_rows_to(out: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """A query row whose every key is masked out gets NaN, as the softmax of a row of -inf is in the graph (or 0 under
    the NaN guard); PyTorch's attention may return zeros or NaN there. (A causal mask alone always leaves the first key
    visible.)"""
    dead = ~mask.any(-1, keepdim=True) if mask.dtype == torch.bool else (mask == float("-inf")).all(-1, keepdim=True)
    return out.masked_fill_(dead, value)
