"""ONNX Attention (opsets 23 to 25): masks (additive or boolean, shorter than the keys), causal and sliding-window
masks aligned to the end of a KV cache, grouped-query heads, softcap, and the qk_matmul_output modes.

Follows the ONNX reference step for step (scale split over Q and K, softcap before the mask, fully masked rows
give zeros), so results agree with both the reference and the `_expanded` function bodies.
"""
from __future__ import annotations

import math

import torch

from ...ir import ops
from ..registry import kernel


def _to_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H * D] -> [B, H, S, D]."""
    batch, seq, hidden = x.shape
    return x.reshape(batch, seq, heads, hidden // heads).transpose(1, 2)


def _allowed_to_bias(allowed: torch.Tensor, dtype) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), float("-inf"), dtype=dtype, device=allowed.device))


def _positions(q_len: int, kv_len: int, offset, device) -> torch.Tensor:
    """(query position + offset) - key position, [q, kv] or [batch, 1, q, kv] for a per-batch offset."""
    i = torch.arange(q_len, device=device).reshape(q_len, 1)
    j = torch.arange(kv_len, device=device).reshape(1, kv_len)
    if isinstance(offset, torch.Tensor):
        return (i + offset.reshape(-1, 1, 1, 1).long()) - j
    return (i + offset) - j


def _mask_bias(op: ops.OnnxAttention, q, k_len: int, mask, past_len, nonpad) -> torch.Tensor:
    """The additive bias [.., q, kv] from attn_mask, causality, the sliding window and the key padding."""
    q_len, dtype, device = q.shape[2], q.dtype, q.device
    if mask is not None and mask.shape[-1] < k_len:  # a mask shorter than the keys masks the rest
        pad = torch.zeros(*mask.shape[:-1], k_len - mask.shape[-1], dtype=mask.dtype, device=device)
        mask = torch.cat([mask, pad if mask.dtype == torch.bool else pad.fill_(float("-inf"))], dim=-1)
    if mask is not None and mask.dtype == torch.bool:
        mask = _allowed_to_bias(mask, dtype)
    bias = torch.zeros((q_len, k_len), dtype=dtype, device=device)
    if mask is not None:
        bias = bias + mask.to(dtype)
    # causal and window masks end where the valid keys end: after the past cache, or at nonpad_kv_seqlen
    offset = past_len if nonpad is None or past_len else nonpad - q_len
    if op.is_causal:
        bias = bias + _allowed_to_bias(_positions(q_len, k_len, offset, device) >= 0, dtype)
    if op.left_window >= 0 or op.right_window >= 0:
        diff = _positions(q_len, k_len, offset, device)
        allowed = torch.ones_like(diff, dtype=torch.bool)
        if op.left_window >= 0:
            allowed = allowed & (diff <= op.left_window)
        if op.right_window >= 0:
            allowed = allowed & (-diff <= op.right_window)
        bias = bias + _allowed_to_bias(allowed, dtype)
    if nonpad is not None:
        valid = torch.arange(k_len, device=device).reshape(1, k_len) < nonpad.reshape(-1, 1)
        bias = bias + _allowed_to_bias(valid, dtype).reshape(-1, 1, 1, k_len)
    return bias


def _softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax whose all -inf rows give zeros instead of NaN."""
    row_max = x.amax(dim=-1, keepdim=True)
    safe = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(x - safe)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


@kernel(ops.OnnxAttention)
def onnx_attention(op: ops.OnnxAttention, inputs):
    q, k, v, mask, past_key, past_value, nonpad = (list(inputs) + [None] * 7)[:7]
    three_d = q.dim() == 3
    if three_d:
        q, k, v = _to_heads(q, op.q_num_heads), _to_heads(k, op.kv_num_heads), _to_heads(v, op.kv_num_heads)
    scale = op.scale if op.scale is not None else 1 / math.sqrt(q.shape[3])
    root = torch.tensor(math.sqrt(scale), dtype=q.dtype)  # ONNX splits the scale over Q and K, in Q's dtype
    past_len = 0 if past_key is None else past_key.shape[2]
    present_key = k if past_key is None else torch.cat([past_key, k], dim=2)
    present_value = v if past_value is None else torch.cat([past_value, v], dim=2)
    k, v = present_key, present_value
    bias = _mask_bias(op, q, k.shape[2], mask, past_len, nonpad)
    if q.shape[1] != k.shape[1] and q.shape[1] % k.shape[1] == 0:  # grouped-query: each KV head serves a group
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = torch.matmul(q * root, (k * root).transpose(-1, -2))
    if op.softcap is not None and op.softcap > 0:
        scores = torch.tanh(scores / op.softcap) * op.softcap
    qk_output = scores
    with_bias = scores + bias
    if op.qk_matmul_output_mode == 2:
        qk_output = with_bias
    if op.softmax_precision is not None:
        with_bias = with_bias.to(op.softmax_precision.torch)
    probabilities = _softmax(with_bias)
    masked_rows = torch.isneginf(bias.amax(dim=-1, keepdim=True))
    probabilities = torch.where(masked_rows, torch.zeros_like(probabilities), probabilities)
    if op.qk_matmul_output_mode == 3:
        qk_output = probabilities
    y = torch.matmul(probabilities.to(q.dtype), v)
    if three_d:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    return [y, present_key, present_value, qk_output.to(q.dtype)]
