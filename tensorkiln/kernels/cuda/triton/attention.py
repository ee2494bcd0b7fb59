"""Flash-attention-style fused attention: softmax(Q K^T * scale + mask) V, causal option, in one pass over K and V.

Each program owns BLOCK_M query rows of one (batch, head); it streams K/V in blocks of BLOCK_N and keeps an online
softmax in FP32: the running row maximum m, the running sum l of exp(s - m) and the output accumulator, both
rescaled by exp(m_old - m_new) whenever the maximum grows, so the [Sq, Sk] score matrix never reaches memory. Causal
masking is aligned to the top left (key j is visible to query i when j <= i), as PyTorch's is_causal, and skips the
K/V blocks wholly above the diagonal. A row whose every key is masked gives NaN, as the softmax of a row of -inf
does in the ONNX graph this layer replaces (kernels/cpu/attention.py); NaN and Inf in the inputs spread as there.
Under NAN_TO_ZERO (the exporters' NaN guard after Softmax) a row whose probabilities are NaN gives zeros instead.
Grouped-query attention: K and V have H / KV_GROUP heads, and query head h reads K/V head h // KV_GROUP.

Layouts. Transformer exports split heads with a reshape [B, S, H*D] -> [B, S, H, D] and a transpose to
[B, H, S, D], and merge them back the same way after attention. Both transposes are free views only if nothing
insists on a row-major [B, H, S, D]: so the kernel reads Q, K, V and the mask through separate batch and head
strides (the head-split views, and masks broadcast over heads, are read in place), and the output is stored
[B, S, H, D] in memory and returned as its [B, H, S, D] view, which the merging transpose and reshape then see as
a plain row-major [B, S, H*D] (PyTorch's flash and memory-efficient SDPA kernels return the same layout).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ....ir.shape_rules import broadcast_shapes
from .configs import ATTENTION_CONFIGS, AttentionConfig
from .epilogue import exp2_ftz
from .gemm import input_precision


LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,  # q [B, H, Sq, D], k [B, H, Sk, D], v [B, H, Sk, Dv], o [B, H, Sq, Dv], any strides
    mask_ptr,  # additive mask [B, H, Sq, Sk] (strides may be 0 where it broadcasts; unused unless HAS_MASK)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    H, Sq, Sk, D, Dv, scale,  # H: query heads (grid axis 1 runs over B * H)
    kv_group,  # query heads per K/V head (1 unless grouped-query attention)
    HAS_MASK: tl.constexpr, MASK_ROWS: tl.constexpr, CAUSAL: tl.constexpr, NAN_TO_ZERO: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_m = tl.program_id(axis=0)
    batch_head = tl.program_id(axis=1).to(tl.int64)
    batch, head = batch_head // H, batch_head % H
    q_ptr += batch * stride_qb + head * stride_qh
    kv_head = head // kv_group
    k_ptr += batch * stride_kb + kv_head * stride_kh
    v_ptr += batch * stride_vb + kv_head * stride_vh
    o_ptr += batch * stride_ob + head * stride_oh
    mask_ptr += batch * stride_mb + head * stride_mh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n0 = tl.arange(0, BLOCK_N)
    mask_m = offs_m < Sq
    q = tl.load(q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None] & (offs_d[None, :] < D), other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    end = Sk
    if CAUSAL:  # blocks wholly above the diagonal contribute nothing
        end = tl.minimum(Sk, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, end, BLOCK_N):
        offs_n = start_n + offs_n0
        mask_n = offs_n < Sk
        k = tl.load(k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=mask_n[:, None] & (offs_d[None, :] < D), other=0.0)
        # scores in base 2 (exp2 is the hardware's exponential): softmax is the same with every score times log2(e)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * (scale * LOG2E)
        if HAS_MASK:
            if MASK_ROWS:
                bias = tl.load(mask_ptr + offs_m[:, None] * stride_mm + offs_n[None, :] * stride_mn,
                               mask=mask_m[:, None] & mask_n[None, :], other=0.0)
            else:  # one mask row for every query (a padding mask): load it once per block
                bias = tl.load(mask_ptr + offs_n * stride_mn, mask=mask_n, other=0.0)[None, :]
            s += bias.to(tl.float32) * LOG2E
        visible = mask_n[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet stays at zero
        p = exp2_ftz(s - m_safe[:, None])  # one MUFU.EX2 each (what tl.exp2 adds handles denormal results)
        rescale = exp2_ftz(m_i - m_safe)
        l_i = l_i * rescale + tl.sum(p, axis=1)
        v = tl.load(v_ptr + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                    mask=mask_n[:, None] & (offs_dv[None, :] < Dv), other=0.0)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]  # 0 / 0 = NaN where every key is masked
    if NAN_TO_ZERO:  # the guard: a row of NaN probabilities (l is 0 or NaN there) weighs every value by 0
        out = tl.where((l_i > 0.0)[:, None], out, 0.0)
    tl.store(o_ptr + offs_m[:, None] * stride_om + offs_dv[None, :] * stride_od,
             out.to(o_ptr.dtype.element_ty), mask=mask_m[:, None] & (offs_dv[None, :] < Dv))


def _batch_heads(x: torch.Tensor, batch_shape: torch.Size, rows: int, cols: int) -> torch.Tensor:
    """x broadcast to batch_shape + [rows, cols] and seen as [batch, heads, rows, cols], heads being the last batch
    dim: a view (strided or broadcast as it comes), except where more than two batch dims have strides that do not
    merge (then reshape copies)."""
    x = x.expand(*batch_shape, rows, cols)
    while x.dim() < 4:
        x = x.unsqueeze(0)
    return x.reshape(-1, *x.shape[-3:])


def _output(batch_shape: torch.Size, sq: int, dv: int, like: torch.Tensor) -> torch.Tensor:
    """The [*batch, Sq, Dv] result, stored [*batch[:-1], Sq, heads, Dv] where there is a head dim (see the module
    docstring: the transpose that merges the heads back is then a view)."""
    if len(batch_shape) < 2:  # no head dim to interleave: [N, Sq, Dv] (or [Sq, Dv]) row-major
        return torch.empty((*batch_shape, sq, dv), dtype=like.dtype, device=like.device)
    heads = batch_shape[-1]
    stored = torch.empty((*batch_shape[:-1], sq, heads, dv), dtype=like.dtype, device=like.device)
    return stored.transpose(-2, -3)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
              scale: float, causal: bool = False, nan_to_zero: bool = False, grouped_kv: bool = False,
              config: AttentionConfig = ATTENTION_CONFIGS[0]) -> torch.Tensor:
    """softmax(q @ k^T * scale + mask) @ v with the batch dims broadcast; a boolean mask keeps where True. Inputs may
    be any strided views; the result is [*batch, Sq, Dv] laid out as `_output` says. `grouped_kv`: k and v have
    fewer heads (dim -3) than q, a divisor of q's; `nan_to_zero`: rows of NaN probabilities give zeros."""
    Sq, D = q.shape[-2:]
    Sk, Dv = v.shape[-2:]
    kv_heads = k.shape[-3] if grouped_kv else None
    kv_batch = [t.shape[:-3] + (1,) if grouped_kv else t.shape[:-2] for t in (k, v)]
    batch_shape = broadcast_shapes(q.shape[:-2], *kv_batch, () if mask is None else mask.shape[:-2])
    kv_shape = batch_shape[:-1] + (kv_heads,) if grouped_kv else batch_shape
    kv_group = batch_shape[-1] // kv_heads if grouped_kv else 1
    q4, k4, v4 = (_batch_heads(q, batch_shape, Sq, D), _batch_heads(k, kv_shape, Sk, D),
                  _batch_heads(v, kv_shape, Sk, Dv))
    out = _output(batch_shape, Sq, Dv, q)
    if out.numel() == 0:
        return out
    o4 = _batch_heads(out, batch_shape, Sq, Dv)  # a view: only leading batch dims of a fresh tensor are merged
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    m4 = o4 if mask is None else _batch_heads(mask, batch_shape, Sq, Sk)
    mask_strides = (0, 0, 0, 0) if mask is None else m4.stride()
    batch, heads = o4.shape[:2]
    grid = (triton.cdiv(Sq, config.block_m), batch * heads)
    attention_kernel[grid](
        q4, k4, v4, o4, m4, *q4.stride(), *k4.stride(), *v4.stride(), *o4.stride(), *mask_strides,
        heads, Sq, Sk, D, Dv, float(scale), kv_group, HAS_MASK=mask is not None, MASK_ROWS=mask_strides[2] != 0,
        CAUSAL=causal, NAN_TO_ZERO=nan_to_zero,
        INPUT_PRECISION=input_precision(q.dtype), BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_DV=max(16, triton.next_power_of_2(Dv)),
        num_warps=config.num_warps, num_stages=config.num_stages)
    return out
