"""The INT8 form of the persistent TMA GEMM (gemm_tma.py) for Hopper: C = epilogue((q_a @ q_b^T) s_a s_b) with INT8
A [M, K] (an INT8 activation between linked integer layers, or the layer's input quantized first), INT8 weights B
[N, K] (K-major, as INT8 tensor-core MMAs need both operands), an INT32 accumulator, and the dequantize, bias,
activation, residual and requantize fused in the epilogue (as int8_gemm.py's, whose helpers it shares).

int8_gemm.py's implicit-GEMM kernel gathers A with address arithmetic and masks in its main loop; for 1x1
convolutions and GEMMs, whose A is a dense [M, K] matrix, TMA brings the tiles in without either: on ResNet-50 b256's
1x1 convolutions the INT8 MMA alone (cuBLASLt `_int_mm`) took 40-70% of the FP16 layer's time (bench/int8_layers.py).
TMA needs 16-byte aligned rows: K and N multiples of 16 in INT8 (`supported`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import TmaGemmConfig
from .epilogue import activation_code, apply_epilogue, channel_vector, float_or_zero
from .gemm import grouped_tile
from .gemm_tma import _programs, _scratch
from .int8_gemm import round_half_even


@triton.jit
def int8_gemm_tma_kernel(
    a_ptr, b_ptr, c_ptr, scale_ptr, bias_ptr, slope_ptr, res_ptr,
    M, N, K, stride_rm, stride_rn, out_scale,
    alpha, beta, post_alpha, post_beta, NUM_PROGRAMS,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr, POST_ACT: tl.constexpr,
    OUTPUT_INT8: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, TMA_STORE: tl.constexpr,
):
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[K, 1], block_shape=[BLOCK_N, BLOCK_K])
    if TMA_STORE:
        c_desc = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK_M, BLOCK_N])
    num_pid_m, num_pid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(axis=0), num_pid_m * num_pid_n, NUM_PROGRAMS, flatten=True):
        pid_m, pid_n = grouped_tile(tile, num_pid_m, num_pid_n, GROUP_M)
        row, column = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):  # TMA fills out-of-range elements with zeros
            acc = tl.dot(a_desc.load([row, k * BLOCK_K]), b_desc.load([column, k * BLOCK_K]).T, acc,
                         out_dtype=tl.int32)
        offs_m = row + tl.arange(0, BLOCK_M)
        offs_n = column + tl.arange(0, BLOCK_N)
        mask_m, mask_n = offs_m < M, offs_n < N
        out = acc.to(tl.float32) * tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
        out = apply_epilogue(out, offs_m, offs_n, mask_m, mask_n, bias_ptr, slope_ptr, res_ptr,
                             offs_m.to(tl.int64) * stride_rm, stride_rn, alpha, beta, post_alpha, post_beta,
                             HAS_BIAS, ACT, HAS_RES, POST_ACT)
        if OUTPUT_INT8:  # requantize for the next integer layer, as int8_gemm.py does
            r = round_half_even(out / out_scale)
            out = tl.minimum(tl.maximum(tl.where(r == r, r, 0.0), -128.0), 127.0)
        if TMA_STORE:  # whole rows of the tile through shared memory (TMA drops the out-of-range elements)
            c_desc.store([row, column], out.to(c_ptr.dtype.element_ty))
        else:  # each thread stores its accumulator fragments: two adjacent columns at a time
            c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
            tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def supported(m: int, n: int, k: int) -> bool:
    """TMA's 16-byte rows in INT8: K and N multiples of 16."""
    return m > 0 and k % 16 == 0 and n % 16 == 0


def int8_gemm_tma(a: torch.Tensor, b: torch.Tensor, column_scales: torch.Tensor, *, config: TmaGemmConfig,
                  out_dtype: torch.dtype, bias: torch.Tensor | None = None, activation=None, alpha: float = 0.0,
                  beta: float = 0.0, residual: torch.Tensor | None = None, post_activation=None,
                  post_alpha: float = 0.0, post_beta: float = 0.0, output_scale: float = 0.0,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """epilogue((a @ b^T) column_scales) for INT8 a [M, K] (dense) and b [N, K] (dense), column_scales [N] FP32;
    stored in out_dtype, or INT8 at output_scale where that is given; residual [M, N] (any strides); `out`: a dense
    [M, N] to store into (the residual itself among them)."""
    (m, k), n = a.shape, b.shape[0]
    if a.dtype is not torch.int8 or b.dtype is not torch.int8 or b.shape[1] != k or not supported(m, n, k):
        raise ValueError(f"int8_gemm_tma takes INT8 a [M, K] and b [N, K] with K and N multiples of 16, not "
                         f"{a.dtype} {tuple(a.shape)} and {b.dtype} {tuple(b.shape)}")
    dtype = torch.int8 if output_scale else out_dtype
    if out is None:
        out = torch.empty(m, n, dtype=dtype, device=a.device)
    res = out if residual is None else residual.expand(m, n)
    tile = config.tiles
    tiles = triton.cdiv(m, tile.block_m) * triton.cdiv(n, tile.block_n)
    programs = max(1, min(_programs(a.device.index or 0) * config.programs_per_sm if a.is_cuda else 4, tiles))
    triton.set_allocator(_scratch)
    int8_gemm_tma_kernel[(programs,)](
        a.contiguous(), b.contiguous(), out, column_scales.float().contiguous(), channel_vector(bias, n, out), out,
        res, m, n, k, *res.stride(), float(output_scale or 1.0), float(alpha), float(beta),
        float_or_zero(post_alpha), float_or_zero(post_beta), programs,
        HAS_BIAS=bias is not None, ACT=activation_code(activation, out_dtype=out_dtype), HAS_RES=residual is not None,
        POST_ACT=activation_code(post_activation, out_dtype=out_dtype), OUTPUT_INT8=bool(output_scale),
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m,
        TMA_STORE=config.tma_store and out.is_contiguous(), num_warps=tile.num_warps, num_stages=tile.num_stages)
    return out
