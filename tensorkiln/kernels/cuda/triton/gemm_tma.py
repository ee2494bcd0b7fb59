"""A persistent GEMM for Hopper with tensor-memory-accelerator (TMA) loads, and the fused epilogue:
C = epilogue(A @ B) for a row-major A [M, K], weights B as [N, K] (K-major, `b_k_major`) or [K, N], C [M, N].

For the large-M GEMMs, where the pointer-based GEMM (gemm.py: masked loads, one program per tile) reaches 60-70%
of cuBLAS on an H200: one program per SM walks the output tiles in grouped order, and TMA brings each A and B tile
into shared memory without address arithmetic in the registers. On an H200 (bench/RESULTS.md, `python
bench/gemm_variants.py`), with 128x256 tiles and the epilogue in two halves, it matched cuBLAS on BERT-base b128's FFN
down-projection (113 against 115 us), came within 5% on its QKV projection, and ran ResNet-50 b256's layer1 1x1
convolution with its residual and ReLU in 307 us, where the pointer-based GEMM took 339 us and cuBLAS plus the add
689 us. triton_tactics.py registers it for large 1x1 convolutions on Hopper, and for large GEMMs whose activation
cuBLASLt's epilogue lacks: with BERT's erf GELU (epilogue.py's 16-bit formula) its FFN up-projection took 160 us,
where cuBLAS and a GELU kernel took 187 us and cuBLAS with the bias alone 125 us: the epilogue does not overlap the
next tile's MMAs. Triton 3.6's warp specialization changed nothing on these shapes.

TMA needs 16-byte aligned bases and row strides: K and N multiples of 8 in FP16/BF16 (`supported`). Descriptors
made inside the kernel take a small global scratch buffer per program, which `triton.set_allocator` provides.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .configs import TMA_GEMM_CONFIGS, GemmConfig, TmaGemmConfig
from .epilogue import activation_code, apply_epilogue, channel_vector, float_or_zero
from .gemm import grouped_tile

# what bench/gemm_variants.py sweeps: 128x128 and 128x256 tiles, with and without warp specialization and a split
# epilogue, and two programs per SM for the memory-bound shapes
TMA_CONFIGS = tuple(
    TmaGemmConfig(tiles, ws, split, per_sm)
    for tiles in (GemmConfig(128, 128, 64, 8, 8, 3), GemmConfig(128, 256, 64, 8, 8, 3),
                  GemmConfig(128, 128, 64, 8, 4, 4))
    for ws in (False, True) for split in (False, True) for per_sm in (1, 2)
    if not (split and tiles.block_n < 256) and not (per_sm == 2 and tiles.block_n == 256))


@triton.jit
def _finish_tile(acc, row, column, c_ptr, M, N, bias_ptr, slope_ptr, res_ptr, stride_rm, stride_rn,
                 alpha, beta, post_alpha, post_beta, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                 HAS_RES: tl.constexpr, POST_ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 EVEN: tl.constexpr):
    """The epilogue of one [BLOCK_M, BLOCK_N] tile at (row, column), and its store. EVEN: the tiles divide M and N,
    so no element needs a bounds check."""
    offs_m = row + tl.arange(0, BLOCK_M)
    offs_n = column + tl.arange(0, BLOCK_N)
    if EVEN:  # constant masks, which the compiler drops
        mask_m, mask_n = tl.full((BLOCK_M,), True, tl.int1), tl.full((BLOCK_N,), True, tl.int1)
    else:
        mask_m, mask_n = offs_m < M, offs_n < N
    acc = apply_epilogue(acc, offs_m, offs_n, mask_m, mask_n, bias_ptr, slope_ptr,
                         res_ptr, offs_m.to(tl.int64) * stride_rm, stride_rn,
                         alpha, beta, post_alpha, post_beta, HAS_BIAS, ACT, HAS_RES, POST_ACT)
    # a plain store: through shared memory and a TMA store (descriptor.store) it took 15% longer on ResNet-50's 1x1
    # convolutions with their residual and 1% longer on BERT's GELU up-projection (bench/gemm_variants.py, H200)
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def gemm_tma_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, slope_ptr, res_ptr,
    M, N, K, stride_rm, stride_rn,
    alpha, beta, post_alpha, post_beta, NUM_PROGRAMS,
    B_K_MAJOR: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr,
    POST_ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, SPLIT_EPILOGUE: tl.constexpr, EVEN: tl.constexpr,
):
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    if B_K_MAJOR:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[K, 1], block_shape=[BLOCK_N, BLOCK_K])
    else:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[N, 1], block_shape=[BLOCK_K, BLOCK_N])
    num_pid_m, num_pid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(axis=0), num_pid_m * num_pid_n, NUM_PROGRAMS, flatten=True,
                         warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = grouped_tile(tile, num_pid_m, num_pid_n, GROUP_M)
        row, column = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):  # TMA fills out-of-range elements with zeros
            a = a_desc.load([row, k * BLOCK_K])
            if B_K_MAJOR:
                acc = tl.dot(a, b_desc.load([column, k * BLOCK_K]).T, acc)
            else:
                acc = tl.dot(a, b_desc.load([k * BLOCK_K, column]), acc)
        if SPLIT_EPILOGUE:  # as Triton's persistent-matmul tutorial splits its store
            left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
            _finish_tile(left, row, column, c_ptr, M, N, bias_ptr, slope_ptr, res_ptr, stride_rm, stride_rn,
                         alpha, beta, post_alpha, post_beta, HAS_BIAS, ACT, HAS_RES, POST_ACT, BLOCK_M, BLOCK_N // 2,
                         EVEN)
            _finish_tile(right, row, column + BLOCK_N // 2, c_ptr, M, N, bias_ptr, slope_ptr, res_ptr,
                         stride_rm, stride_rn, alpha, beta, post_alpha, post_beta, HAS_BIAS, ACT, HAS_RES, POST_ACT,
                         BLOCK_M, BLOCK_N // 2, EVEN)
        else:
            _finish_tile(acc, row, column, c_ptr, M, N, bias_ptr, slope_ptr, res_ptr, stride_rm, stride_rn,
                         alpha, beta, post_alpha, post_beta, HAS_BIAS, ACT, HAS_RES, POST_ACT, BLOCK_M, BLOCK_N, EVEN)


def supported(a: torch.Tensor, b: torch.Tensor, b_k_major: bool) -> bool:
    """2-D, dense, 16-bit operands whose rows start 16-byte aligned (TMA's rules)."""
    k = a.shape[-1]
    n = b.shape[0] if b_k_major else b.shape[1]
    return (a.dim() == 2 and b.dim() == 2 and a.dtype in (torch.float16, torch.bfloat16) and b.dtype == a.dtype
            and a.is_contiguous() and b.is_contiguous() and k % 8 == 0 and n % 8 == 0
            and a.data_ptr() % 16 == 0 and b.data_ptr() % 16 == 0)


@functools.cache
def _programs(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _scratch(size: int, alignment: int, stream) -> torch.Tensor:
    """Triton's global scratch for in-kernel tensor descriptors, from PyTorch's allocator (and a CUDA graph's pool
    while one is captured)."""
    return torch.empty(size, dtype=torch.int8, device="cuda" if torch.cuda.is_available() else "cpu")


def gemm_tma(a: torch.Tensor, b: torch.Tensor, *, b_k_major: bool = True, bias: torch.Tensor | None = None,
             activation=None, alpha: float = 0.0, beta: float = 0.0, residual: torch.Tensor | None = None,
             post_activation=None, post_alpha: float = 0.0, post_beta: float = 0.0,
             config: TmaGemmConfig = TMA_GEMM_CONFIGS[0], programs: int | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """post_activation(activation(a @ B + bias) + residual) with B = b.T (b_k_major) or b; residual [M, N] (any
    strides). `out`: a dense [M, N] to store into, the residual itself among them (each program reads its residual
    elements before it stores over them)."""
    if not supported(a, b, b_k_major):
        raise ValueError("gemm_tma takes dense 2-D FP16/BF16 operands with K and N multiples of 8; use gemm.gemm")
    (m, k), n = a.shape, b.shape[0] if b_k_major else b.shape[1]
    if k != (b.shape[1] if b_k_major else b.shape[0]):
        raise ValueError(f"matmul of {tuple(a.shape)} and B {tuple(b.shape)} (K-major: {b_k_major}): inner dims differ")
    if out is None:
        out = torch.empty(m, n, dtype=a.dtype, device=a.device)
    elif tuple(out.shape) != (m, n) or not out.is_contiguous() or out.dtype != a.dtype:
        raise ValueError(f"gemm_tma stores into a dense [{m}, {n}] {a.dtype} tensor, not {tuple(out.shape)}")
    res = out if residual is None else residual.expand(m, n)
    tile = config.tiles
    tiles = triton.cdiv(m, tile.block_m) * triton.cdiv(n, tile.block_n)
    if programs is None:
        programs = _programs(a.device.index or 0) * config.programs_per_sm if a.is_cuda else 4
    programs = max(1, min(programs, tiles))
    triton.set_allocator(_scratch)
    gemm_tma_kernel[(programs,)](
        a, b, out, channel_vector(bias, n, out), out, res, m, n, k, *res.stride(),
        float(alpha), float(beta), float_or_zero(post_alpha), float_or_zero(post_beta), programs,
        B_K_MAJOR=b_k_major, HAS_BIAS=bias is not None, ACT=activation_code(activation, out_dtype=out.dtype),
        HAS_RES=residual is not None, POST_ACT=activation_code(post_activation, out_dtype=out.dtype),
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m,
        WARP_SPECIALIZE=config.warp_specialize, SPLIT_EPILOGUE=config.split_epilogue,
        EVEN=m % tile.block_m == 0 and n % tile.block_n == 0,
        num_warps=tile.num_warps, num_stages=tile.num_stages)
    return out
