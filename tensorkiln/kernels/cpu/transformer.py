"""RotaryEmbedding, LinearAttention (linear, gated, delta and gated-delta state updates) and CausalConvWithState:
the ONNX transformer and state-space operators of opsets 23 to 27."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel


@kernel(ops.RotaryEmbedding)
def rotary_embedding(op: ops.RotaryEmbedding, inputs):
    x, cos, sin, position_ids = (list(inputs) + [None])[:4]
    original = x.shape
    x = x.transpose(1, 2) if x.dim() == 4 else x.reshape(x.shape[0], x.shape[1], op.num_heads, -1)  # [B, S, H, D]
    dim = op.rotary_dim or x.shape[3]
    rotate, keep = x[..., :dim], x[..., dim:]
    if position_ids is not None:
        cos, sin = cos[position_ids.long()], sin[position_ids.long()]
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # one value for every head
    if op.interleaved:
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate[..., : dim // 2], rotate[..., dim // 2:]
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if op.interleaved:
        rotated = torch.stack([real, imag], dim=-1).reshape(rotate.shape)
    else:
        rotated = torch.cat([real, imag], dim=-1)
    y = torch.cat([rotated.to(x.dtype), keep], dim=-1)
    return [y.reshape(original) if len(original) == 3 else y.transpose(1, 2)]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, H * D] -> [B, H, T, D] in float32 (the state is always accumulated in float32)."""
    b, t, hd = x.shape
    return x.reshape(b, t, heads, hd // heads).transpose(1, 2).float()


@kernel(ops.LinearAttention)
def linear_attention(op: ops.LinearAttention, inputs):
    query, key, value, past_state, decay, beta = (list(inputs) + [None] * 6)[:6]
    b, t, _ = query.shape
    q, k, v = _heads(query, op.q_num_heads), _heads(key, op.kv_num_heads), _heads(value, op.kv_num_heads)
    d_k, d_v = q.shape[3], v.shape[3]
    if decay is not None:  # one decay per head, or one per head and key channel
        per_head = decay.shape[-1] == op.kv_num_heads
        decay = (decay.reshape(b, t, op.kv_num_heads, 1).transpose(1, 2) if per_head
                 else _heads(decay, op.kv_num_heads)).float()
    if beta is not None:
        beta = beta.reshape(b, t, beta.shape[-1], 1).transpose(1, 2).float()
    state_dtype = query.dtype if past_state is None else past_state.dtype
    state = (torch.zeros(b, op.kv_num_heads, d_k, d_v, device=query.device) if past_state is None
             else past_state.float())
    scale = op.scale or 1 / math.sqrt(d_k)
    group = op.q_num_heads // op.kv_num_heads
    outputs = []
    for i in range(t):  # a recurrence over time: each step reads the state the previous one wrote
        k_t, v_t = k[:, :, i], v[:, :, i]
        if decay is not None:
            state = state * torch.exp(decay[:, :, i]).unsqueeze(-1)
        if beta is not None:
            v_t = beta[:, :, i] * (v_t - torch.einsum("bhdm,bhd->bhm", state, k_t))
        state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        read = state.repeat_interleave(group, dim=1) if group > 1 else state
        outputs.append(scale * torch.einsum("bhd,bhdm->bhm", q[:, :, i], read))
    out = torch.stack(outputs, dim=2) if outputs else torch.zeros(b, op.q_num_heads, 0, d_v, device=query.device)
    out = out.transpose(1, 2).reshape(b, t, op.q_num_heads * d_v)
    return [out.to(query.dtype), state.to(state_dtype)]


@kernel(ops.CausalConvWithState)
def causal_conv_with_state(op: ops.CausalConvWithState, inputs):
    x, weight, bias, past_state = (list(inputs) + [None] * 4)[:4]
    batch, channels, _ = x.shape
    k = weight.shape[2]
    if past_state is None:
        past_state = torch.zeros(batch, channels, k - 1, dtype=x.dtype, device=x.device)
    padded = torch.cat([past_state, x], dim=2)
    compute = torch.float32 if x.dtype == torch.float16 else x.dtype  # CPU half convolutions are slow or missing
    out = F.conv1d(padded.to(compute), weight.to(compute), None if bias is None else bias.to(compute),
                   groups=channels)
    if op.activation in ("silu", "swish"):
        out = out.float() * torch.sigmoid(out.float())
    return [out.to(x.dtype), padded[:, :, padded.shape[2] - (k - 1):]]
