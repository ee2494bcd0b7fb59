"""Flash-attention-style fused attention: softmax(Q K^T * scale + mask) V, causal option, in one pass over K and V.

Each program owns BLOCK_M query rows; it streams K/V in blocks of BLOCK_N and keeps an online softmax in FP32: the
running row maximum m, the running sum l of exp(s - m) and the output accumulator, both rescaled by exp(m_old -
m_new) whenever the maximum grows, so the [Sq, Sk] score matrix never reaches memory. Causal masking is aligned
to the top left (key j is visible to query i when j <= i), as PyTorch's is_causal, and skips the K/V blocks
wholly above the diagonal. A row whose every key is masked gives zeros.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import ATTENTION_CONFIGS, AttentionConfig
from .gemm import input_precision


@triton.jit
def attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,  # q [B, Sq, D], k [B, Sk, D], v [B, Sk, Dv], o [B, Sq, Dv], any strides
    mask_ptr,  # additive mask [B, Sq, Sk] (strides may be 0 where it broadcasts; unused unless HAS_MASK)
    stride_qb, stride_qm, stride_qd,
    stride_kb, stride_kn, stride_kd,
    stride_vb, stride_vn, stride_vd,
    stride_ob, stride_om, stride_od,
    stride_mb, stride_mm, stride_mn,
    Sq, Sk, D, Dv, scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_m = tl.program_id(axis=0)
    batch = tl.program_id(axis=1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n0 = tl.arange(0, BLOCK_N)
    mask_m = offs_m < Sq
    q = tl.load(q_ptr + batch * stride_qb + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
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
        k = tl.load(k_ptr + batch * stride_kb + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=mask_n[:, None] & (offs_d[None, :] < D), other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * scale
        if HAS_MASK:
            bias = tl.load(mask_ptr + batch * stride_mb + offs_m[:, None] * stride_mm + offs_n[None, :] * stride_mn,
                           mask=mask_m[:, None] & mask_n[None, :], other=0.0)
            s += bias.to(tl.float32)
        visible = mask_n[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet stays at zero
        p = tl.exp(s - m_safe[:, None])
        rescale = tl.exp(m_i - m_safe)
        l_i = l_i * rescale + tl.sum(p, axis=1)
        v = tl.load(v_ptr + batch * stride_vb + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                    mask=mask_n[:, None] & (offs_dv[None, :] < Dv), other=0.0)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(o_ptr + batch * stride_ob + offs_m[:, None] * stride_om + offs_dv[None, :] * stride_od,
             out.to(o_ptr.dtype.element_ty), mask=mask_m[:, None] & (offs_dv[None, :] < Dv))


def _batched(x: torch.Tensor, batch_shape, rows: int, cols: int) -> torch.Tensor:
    return x.expand(*batch_shape, rows, cols).reshape(-1, rows, cols)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
              scale: float, causal: bool = False, config: AttentionConfig = ATTENTION_CONFIGS[0]
              ) -> torch.Tensor:
    """softmax(q @ k^T * scale + mask) @ v with the batch dims broadcast; a boolean mask keeps where True."""
    Sq, D = q.shape[-2:]
    Sk, Dv = v.shape[-2:]
    batch_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                                         () if mask is None else mask.shape[:-2])
    q3, k3, v3 = _batched(q, batch_shape, Sq, D), _batched(k, batch_shape, Sk, D), _batched(v, batch_shape, Sk, Dv)
    out = torch.empty((*batch_shape, Sq, Dv), dtype=q.dtype, device=q.device)
    o3 = out.view(-1, Sq, Dv)
    if o3.numel() == 0:
        return out
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    m3 = o3 if mask is None else mask.expand(*batch_shape, Sq, Sk).reshape(-1, Sq, Sk)
    mask_strides = (0, 0, 0) if mask is None else m3.stride()
    grid = (triton.cdiv(Sq, config.block_m), o3.shape[0])
    attention_kernel[grid](
        q3, k3, v3, o3, m3, *q3.stride(), *k3.stride(), *v3.stride(), *o3.stride(), *mask_strides,
        Sq, Sk, D, Dv, float(scale), HAS_MASK=mask is not None, CAUSAL=causal,
        INPUT_PRECISION=input_precision(q.dtype), BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_DV=max(16, triton.next_power_of_2(Dv)),
        num_warps=config.num_warps, num_stages=config.num_stages)
    return out
