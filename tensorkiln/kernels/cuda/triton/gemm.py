"""GEMM with a fused epilogue: C[b] = epilogue(A[b] @ B[b]), batched, transposes expressed through strides.

Tiles of A [BLOCK_M, BLOCK_K] and B [BLOCK_K, BLOCK_N] meet in tl.dot with an FP32 accumulator; programs are
ordered in groups of GROUP_M row blocks so that neighbouring programs share B tiles in L2 (as in Triton's matmul
tutorial). FP32 inputs use exact IEEE products unless PyTorch's TF32 switch is on, the way FP32 engines expect.

Split-K (config.split_k > 1) is for problems with too few output tiles to fill the GPU (batch-1 layers: M = 49
pixels, or 128 tokens): SPLIT_K programs share a tile, each reducing one slice of K; each stores its FP32 partial
sum in a workspace and bumps the tile's counter, and the last to arrive adds the partials and runs the epilogue
("serial split-K", one kernel; the counters start at zero on every launch).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ....ir.shape_rules import broadcast_shapes
from .configs import GEMM_CONFIGS, GemmConfig, split_k_for
from .epilogue import activation_code, apply_epilogue, channel_vector, float_or_zero, output_buffer


@triton.jit
def grouped_tile(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(row block, column block) of program `pid` in grouped order: GROUP_M row blocks sweep the columns
    together, which keeps their B tiles in L2 (also the implicit-GEMM convolution's order)."""
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    return first_pid_m + ((pid % num_pid_in_group) % group_size_m), (pid % num_pid_in_group) // group_size_m


@triton.jit
def split_k_range(k_blocks, pid_k, SPLIT_K: tl.constexpr):
    """The K blocks [first, last) that split `pid_k` of SPLIT_K reduces."""
    if SPLIT_K == 1:
        first, last = 0, k_blocks
    else:
        per_split = tl.cdiv(k_blocks, SPLIT_K)
        first, last = pid_k * per_split, tl.minimum((pid_k + 1) * per_split, k_blocks)
    return first, last


@triton.jit
def split_k_gather(acc, mask_m, ws_ptr, lock_ptr, tile, pid_k,
                   SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Serial split-K: store this split's partial `acc` of output tile `tile`; the last split of the tile to get
    here returns the sum of all partials, the others a row mask that is all false (their epilogue and store then
    do nothing)."""
    if SPLIT_K == 1:
        total, mask = acc, mask_m
    else:
        total, mask = _gather_partials(acc, mask_m, ws_ptr, lock_ptr, tile, pid_k, SPLIT_K, BLOCK_M, BLOCK_N)
    return total, mask


@triton.jit
def _gather_partials(acc, mask_m, ws_ptr, lock_ptr, tile, pid_k,
                     SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    offs = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    tile_ws = ws_ptr + tile.to(tl.int64) * (SPLIT_K * BLOCK_M * BLOCK_N)
    tl.store(tile_ws + pid_k * (BLOCK_M * BLOCK_N) + offs, acc)
    tl.debug_barrier()  # every thread's partial is written before the counter says so (the atomic releases it)
    arrived_before = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel")
    # the last program keeps its masks, the others get empty ones (limits rather than `mask & flag`: Triton's
    # interpreter cannot mask loads with a block combined with a scalar flag)
    last = arrived_before == SPLIT_K - 1
    in_tile = offs < tl.where(last, BLOCK_M * BLOCK_N, 0)
    total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for split in tl.static_range(SPLIT_K):  # .cg: read the other programs' partials from L2, not a stale L1
        total += tl.load(tile_ws + split * (BLOCK_M * BLOCK_N) + offs, mask=in_tile, other=0.0, cache_modifier=".cg")
    return total, mask_m & (tl.arange(0, BLOCK_M) < tl.where(last, BLOCK_M, 0))


@triton.jit
def tile_product(a_ptr, b_ptr, offs_m, offs_n, mask_m, mask_n, K, stride_am, stride_ak, stride_bk, stride_bn, pid_k,
                 INPUT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 SPLIT_K: tl.constexpr):
    """The FP32 product [BLOCK_M, BLOCK_N] of A's rows offs_m and B's columns offs_n over the K blocks that split
    `pid_k` of SPLIT_K reduces (all of them without split-K); masked loads, zeros past the ends."""
    offs_k = tl.arange(0, BLOCK_K)
    k_first, k_last = split_k_range(tl.cdiv(K, BLOCK_K), pid_k, SPLIT_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + (offs_k[None, :] + k_first * BLOCK_K) * stride_ak
    b_ptrs = b_ptr + (offs_k[:, None] + k_first * BLOCK_K) * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_first, k_last):
        k_left = K - k * BLOCK_K  # the last tile is ragged: mask it, fill with zeros
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


def split_k_buffers(tiles: int, split: int, config, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FP32 partial-sum workspace and the zeroed arrival counters of a launch over `tiles` tiles split `split`
    ways (for split 1, placeholders the kernel never touches)."""
    if split == 1:
        return like, like
    workspace = torch.empty(tiles * split * config.block_m * config.block_n, dtype=torch.float32, device=like.device)
    return workspace, torch.zeros(tiles, dtype=torch.int32, device=like.device)


@triton.jit
def gemm_kernel(
    a_ptr, b_ptr, c_ptr,  # A [batch, M, K], B [batch, K, N], C [batch, M, N] (any strides)
    bias_ptr, slope_ptr, res_ptr,  # epilogue operands: bias [N], PReLU slope [N], residual [batch, M, N]
    ws_ptr, lock_ptr,  # split-K partial sums and arrival counters (see split_k_gather)
    M, N, K,
    stride_ab, stride_am, stride_ak,
    stride_bb, stride_bk, stride_bn,
    stride_cb, stride_cm, stride_cn,
    stride_rb, stride_rm, stride_rn,
    alpha, beta, post_alpha, post_beta,  # activation parameters
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr, POST_ACT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (FP32 inputs only; FP16/BF16 ignore it)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    batch = tl.program_id(axis=1).to(tl.int64)
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    tile, pid_k = pid // SPLIT_K, pid % SPLIT_K
    pid_m, pid_n = grouped_tile(tile, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tile_product(a_ptr + batch * stride_ab, b_ptr + batch * stride_bb, offs_m, offs_n, mask_m, mask_n, K,
                       stride_am, stride_ak, stride_bk, stride_bn, pid_k, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
                       SPLIT_K)

    acc, mask_m = split_k_gather(acc, mask_m, ws_ptr, lock_ptr, batch * tiles + tile, pid_k, SPLIT_K, BLOCK_M, BLOCK_N)
    acc = apply_epilogue(acc, offs_m, offs_n, mask_m, mask_n, bias_ptr, slope_ptr,
                         res_ptr + batch * stride_rb, offs_m * stride_rm, stride_rn,
                         alpha, beta, post_alpha, post_beta, HAS_BIAS, ACT, HAS_RES, POST_ACT)
    c_ptrs = c_ptr + batch * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def input_precision(dtype: torch.dtype) -> str:
    """TF32 products only where PyTorch would use them (FP32 engines switch TF32 off)."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _as_batched(x: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
    """[..., R, C] broadcast to batch_shape + [R, C] and viewed as [batch, R, C] (a copy only when the broadcast
    strides cannot be merged)."""
    return x.expand(*batch_shape, *x.shape[-2:]).reshape(-1, *x.shape[-2:])


def _final_shape(batch_shape, M: int, N: int, squeezed: list[int]) -> tuple[int, ...]:
    """The shape gemm returns: the batch dims, then M and N unless a 1-D operand squeezed them away."""
    return (*batch_shape, *([] if -2 in squeezed else [M]), *([] if -1 in squeezed else [N]))


def _residual(residual: torch.Tensor, batch_shape, M: int, N: int, squeezed: list[int]) -> torch.Tensor:
    """The residual (shaped like the final output, or broadcast to it) as [batch, M, N]."""
    residual = residual.expand(_final_shape(batch_shape, M, N, squeezed))
    for dim in reversed(squeezed):
        residual = residual.unsqueeze(dim)
    return residual.reshape(-1, M, N)


def gemm(a: torch.Tensor, b: torch.Tensor, *, transpose_a: bool = False, transpose_b: bool = False,
         bias: torch.Tensor | None = None, activation=None, alpha: float = 0.0, beta: float = 0.0,
         prelu_slope: torch.Tensor | None = None, residual: torch.Tensor | None = None,
         post_activation=None, post_alpha: float = 0.0, post_beta: float = 0.0,
         out_dtype: torch.dtype | None = None, config: GemmConfig = GEMM_CONFIGS[0],
         over_residual: bool = False) -> torch.Tensor:
    """numpy-matmul semantics (batch dims broadcast, 1-D operands promoted) after the optional transposes of the
    last two dims, then y = post_activation(activation(a @ b + bias) + residual); bias and prelu_slope hold one
    value per output column (or one value), residual broadcasts to the output. `over_residual` lets it store y over
    the residual (see output_buffer)."""
    squeeze = []
    if a.dim() == 1:
        a, squeeze = a.unsqueeze(0), squeeze + [-2]
    if b.dim() == 1:
        b, squeeze = b.unsqueeze(-1), squeeze + [-1]
    if transpose_a:
        a = a.transpose(-1, -2)
    if transpose_b:
        b = b.transpose(-1, -2)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul of {tuple(a.shape)} and {tuple(b.shape)}: inner dims differ")
    batch_shape = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (M, K), N = a.shape[-2:], b.shape[-1]
    a3, b3 = _as_batched(a, batch_shape), _as_batched(b, batch_shape)
    batch = a3.shape[0]
    out = output_buffer(_final_shape(batch_shape, M, N, squeeze), out_dtype or a.dtype, a.device, residual=residual,
                        over_residual=over_residual).view(batch, M, N)
    res3 = out if residual is None else _residual(residual, batch_shape, M, N, squeeze)
    act = activation_code(activation, prelu_slope is not None, out.dtype)
    tiles = triton.cdiv(M, config.block_m) * triton.cdiv(N, config.block_n)
    split = split_k_for(config, tiles * batch)
    gemm_kernel[(tiles * split, batch)](
        a3, b3, out, channel_vector(bias, N, out), channel_vector(prelu_slope, N, out), res3,
        *split_k_buffers(tiles * batch, split, config, out), M, N, K,
        *a3.stride(), *b3.stride(), *out.stride(), *res3.stride(),
        float(alpha), float(beta), float_or_zero(post_alpha), float_or_zero(post_beta),
        HAS_BIAS=bias is not None, ACT=act, HAS_RES=residual is not None,
        POST_ACT=activation_code(post_activation, out_dtype=out.dtype), INPUT_PRECISION=input_precision(a.dtype),
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        SPLIT_K=split, num_warps=config.num_warps, num_stages=config.num_stages)
    out = out.reshape(*batch_shape, M, N)
    for dim in squeeze:
        out = out.squeeze(dim)
    return out
