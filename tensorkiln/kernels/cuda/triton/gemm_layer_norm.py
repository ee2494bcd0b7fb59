"""GEMM + bias + residual with LayerNorm in the epilogue: out = layer_norm(A @ B + bias + residual) * scale + shift,
the norm over each whole output row (ops.FusedMatMulLayerNorm).

A LayerNorm needs a whole row, and an output tile holds BLOCK_N columns of it. Rather than one tile as wide as the
row (768 columns: a [BLOCK_M, 1024] FP32 accumulator that no register file holds at a useful BLOCK_M), the GEMM keeps
its ordinary tiles and counts arrivals per row block: every program stores its tile of the pre-norm sum (in the
output's dtype, as the unfused GEMM stored it for the LayerNorm to read), then bumps its row block's counter; the
program that arrives last reads the row block back from L2 (its tiles were just written) and normalizes it in
place, a few rows at a time. The result is the unfused pair's, rounding included, in one launch and without the
norm's read of the sum from DRAM. Serial split-K (gemm.py) composes with it: only the split that stores a tile
counts its arrival. The counters are zeroed on every launch, the split-K ones with them. The persistent TMA GEMM
(gemm_tma.py) takes the same norm the same way (gemm_tma_layer_norm): a program that finishes a row block's last
tile normalizes it before it moves on to its next tile.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import GemmConfig, TmaGemmConfig, split_k_for
from .epilogue import apply_epilogue, channel_vector, output_buffer
from .gemm import grouped_tile, input_precision, split_k_gather, tile_product
from .gemm_tma import _finish_tile as finish_tile
from .gemm_tma import _programs as sm_count
from .gemm_tma import _scratch as descriptor_scratch
from .gemm_tma import supported

MAX_ROW = 8192  # the widest row the normalizing program takes in one [rows, row] tile
# FP32 values per thread of the rows the normalizing program holds at a time: the accumulator's registers are free by
# then, and each pass of its loop waits for an L2 round trip, so the more rows a pass takes, the fewer the waits
_TAIL_VALUES_PER_THREAD = 64


def _norm_rows(block_m: int, row_n: int, num_warps: int) -> int:
    """Rows per pass of the normalizing loop: a power of two that divides BLOCK_M."""
    return max(1, min(block_m, _TAIL_VALUES_PER_THREAD * 32 * num_warps // row_n))


@triton.jit
def _normalize_rows(c_ptr, stride_cm, scale_ptr, shift_ptr, first_row, M, N, eps,
                    HAS_SHIFT: tl.constexpr, BLOCK_M: tl.constexpr, ROW_N: tl.constexpr, NORM_ROWS: tl.constexpr):
    """Rows [first_row, first_row + BLOCK_M) of C, now whole: normalized in place, NORM_ROWS at a time."""
    cols = tl.arange(0, ROW_N)
    col_ok = cols < N
    scale = tl.load(scale_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        shift = tl.load(shift_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    else:
        shift = tl.zeros((ROW_N,), dtype=tl.float32)
    for start in range(0, BLOCK_M, NORM_ROWS):
        rows = first_row + start + tl.arange(0, NORM_ROWS)
        mask = (rows < M)[:, None] & col_ok[None, :]
        ptrs = c_ptr + rows[:, None].to(tl.int64) * stride_cm + cols[None, :]
        # .cg: the other programs' tiles are in L2; this program's L1 may hold nothing of them, or stale lines
        x = tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)
        mean = tl.sum(x, axis=1) / N
        deviation = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(deviation * deviation, axis=1) / N + eps)
        y = deviation * rstd[:, None] * scale[None, :] + shift[None, :]
        tl.store(ptrs, y.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gemm_layer_norm_kernel(
    a_ptr, b_ptr, c_ptr,  # A [M, K], B [K, N] (any strides), C [M, N] (unit column stride)
    bias_ptr, res_ptr,  # bias [N] (unused unless HAS_BIAS), residual [M, N] with unit column stride (unless HAS_RES)
    scale_ptr, shift_ptr,  # the norm's scale [N] and shift [N] (unused unless HAS_SHIFT)
    ws_ptr, lock_ptr,  # split-K partial sums and per-tile arrival counters (see gemm.split_k_gather)
    row_lock_ptr,  # per-row-block arrival counters, zero at launch
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_rm,
    eps,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_SHIFT: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, ROW_N: tl.constexpr, NORM_ROWS: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    column_blocks = tl.cdiv(N, BLOCK_N)
    tile, pid_k = pid // SPLIT_K, pid % SPLIT_K
    pid_m, pid_n = grouped_tile(tile, tl.cdiv(M, BLOCK_M), column_blocks, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tile_product(a_ptr, b_ptr, offs_m, offs_n, mask_m, mask_n, K, stride_am, stride_ak, stride_bk, stride_bn,
                       pid_k, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K)

    acc, mask_m = split_k_gather(acc, mask_m, ws_ptr, lock_ptr, tile, pid_k, SPLIT_K, BLOCK_M, BLOCK_N)
    acc = apply_epilogue(acc, offs_m, offs_n, mask_m, mask_n, bias_ptr, bias_ptr, res_ptr, offs_m * stride_rm, 1,
                         0.0, 0.0, 0.0, 0.0, HAS_BIAS, 0, HAS_RES, 0)
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :], acc.to(c_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])
    # a split that handed its partial sum on stored nothing (its row mask is all false): it does not arrive
    stored = tl.sum(mask_m.to(tl.int32), axis=0) > 0
    tl.debug_barrier()  # the whole tile is stored before the counter says so (the atomic releases it)
    arrived_before = tl.atomic_add(row_lock_ptr + pid_m, stored.to(tl.int32), sem="acq_rel")
    if stored & (arrived_before == column_blocks - 1):
        _normalize_rows(c_ptr, stride_cm, scale_ptr, shift_ptr, pid_m * BLOCK_M, M, N, eps,
                        HAS_SHIFT, BLOCK_M, ROW_N, NORM_ROWS)


def gemm_layer_norm(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None, *,
                    bias: torch.Tensor | None = None, residual: torch.Tensor | None = None, eps: float = 1e-5,
                    transpose_b: bool = False, config: GemmConfig = GemmConfig(), over_residual: bool = False
                    ) -> torch.Tensor:
    """layer_norm(a @ b + bias + residual) over the last dim, times scale, plus shift. a [..., K]; b [K, N] ([N, K]
    with transpose_b); bias, scale, shift one value per column (or one value); residual [..., N]. `over_residual`:
    the result may be stored over the residual (output_buffer)."""
    b = b.t() if transpose_b else b
    K, N = b.shape
    if a.shape[-1] != K:
        raise ValueError(f"matmul of {tuple(a.shape)} and {tuple(b.shape)}: inner dims differ")
    if N > MAX_ROW:
        raise ValueError(f"rows of {N} are wider than the {MAX_ROW} this kernel normalizes; use another tactic")
    rows = a.reshape(-1, K)
    M = rows.shape[0]
    res2 = None if residual is None else residual.expand(*a.shape[:-1], N).reshape(M, N).contiguous()
    out = output_buffer((M, N), a.dtype, a.device, residual=res2, over_residual=over_residual)
    if M == 0 or N == 0:
        return out.view(*a.shape[:-1], N)
    tiles = triton.cdiv(M, config.block_m) * triton.cdiv(N, config.block_n)
    row_blocks = triton.cdiv(M, config.block_m)
    split = split_k_for(config, tiles)
    counters = torch.zeros(row_blocks + (tiles if split > 1 else 0), dtype=torch.int32, device=a.device)
    workspace = out if split == 1 else torch.empty(tiles * split * config.block_m * config.block_n,
                                                   dtype=torch.float32, device=a.device)
    row_n = triton.next_power_of_2(N)
    gemm_layer_norm_kernel[(tiles * split,)](
        rows, b, out, channel_vector(bias, N, out), out if res2 is None else res2,
        channel_vector(scale, N, out), channel_vector(shift, N, out),
        workspace, counters[row_blocks:] if split > 1 else counters, counters,
        M, N, K, *rows.stride(), *b.stride(), out.stride(0), N if res2 is None else res2.stride(0), float(eps),
        HAS_BIAS=bias is not None, HAS_RES=res2 is not None, HAS_SHIFT=shift is not None,
        INPUT_PRECISION=input_precision(a.dtype), BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        BLOCK_K=config.block_k, GROUP_M=config.group_m, SPLIT_K=split, ROW_N=row_n,
        NORM_ROWS=_norm_rows(config.block_m, row_n, config.num_warps),
        num_warps=config.num_warps, num_stages=config.num_stages)
    return out.view(*a.shape[:-1], N)


# ---- the persistent TMA GEMM (Hopper) with the same norm: large-M layers (BERT-base b128's 24 residual projections) --
@triton.jit
def gemm_tma_layer_norm_kernel(
    a_ptr, b_ptr, c_ptr,  # A [M, K] and C [M, N] dense row-major, B [N, K] (B_K_MAJOR) or [K, N] dense
    bias_ptr, res_ptr, scale_ptr, shift_ptr,  # as in gemm_layer_norm_kernel; the residual [M, N] dense
    row_lock_ptr,  # per-row-block arrival counters, zero at launch
    M, N, K, eps, NUM_PROGRAMS,
    B_K_MAJOR: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_SHIFT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_EPILOGUE: tl.constexpr, EVEN: tl.constexpr, FLATTEN: tl.constexpr, ROW_N: tl.constexpr,
    NORM_ROWS: tl.constexpr,
):
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    if B_K_MAJOR:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[K, 1], block_shape=[BLOCK_N, BLOCK_K])
    else:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[N, 1], block_shape=[BLOCK_K, BLOCK_N])
    num_pid_m, num_pid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(axis=0), num_pid_m * num_pid_n, NUM_PROGRAMS, flatten=FLATTEN):
        pid_m, pid_n = grouped_tile(tile, num_pid_m, num_pid_n, GROUP_M)
        row, column = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):  # TMA fills out-of-range elements with zeros
            a = a_desc.load([row, k * BLOCK_K])
            if B_K_MAJOR:
                acc = tl.dot(a, b_desc.load([column, k * BLOCK_K]).T, acc)
            else:
                acc = tl.dot(a, b_desc.load([k * BLOCK_K, column]), acc)
        if SPLIT_EPILOGUE:  # two column halves: half the registers live at a time (gemm_tma.py)
            left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
            finish_tile(left, row, column, c_ptr, M, N, bias_ptr, bias_ptr, res_ptr, N, 1, 0.0, 0.0, 0.0, 0.0,
                        HAS_BIAS, 0, HAS_RES, 0, BLOCK_M, BLOCK_N // 2, EVEN)
            finish_tile(right, row, column + BLOCK_N // 2, c_ptr, M, N, bias_ptr, bias_ptr, res_ptr, N, 1,
                        0.0, 0.0, 0.0, 0.0, HAS_BIAS, 0, HAS_RES, 0, BLOCK_M, BLOCK_N // 2, EVEN)
        else:
            finish_tile(acc, row, column, c_ptr, M, N, bias_ptr, bias_ptr, res_ptr, N, 1, 0.0, 0.0, 0.0, 0.0,
                        HAS_BIAS, 0, HAS_RES, 0, BLOCK_M, BLOCK_N, EVEN)
        tl.debug_barrier()  # the whole tile is stored before the counter says so (the atomic releases it)
        if tl.atomic_add(row_lock_ptr + pid_m, 1, sem="acq_rel") == num_pid_n - 1:
            _normalize_rows(c_ptr, N, scale_ptr, shift_ptr, row, M, N, eps, HAS_SHIFT, BLOCK_M, ROW_N, NORM_ROWS)


def gemm_tma_layer_norm(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None, *,
                        b_k_major: bool = True, bias: torch.Tensor | None = None,
                        residual: torch.Tensor | None = None, eps: float = 1e-5,
                        config: TmaGemmConfig = TmaGemmConfig(), flatten: bool = False,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """layer_norm(a @ B + bias + residual) * scale + shift for a dense [M, K] a and B = b.T (b_k_major) or b, on the
    persistent TMA GEMM; residual a dense [M, N]. `out`: where to store (the residual itself among them)."""
    if not supported(a, b, b_k_major):
        raise ValueError("gemm_tma_layer_norm takes dense 2-D FP16/BF16 operands with K and N multiples of 8")
    (m, k), n = a.shape, b.shape[0] if b_k_major else b.shape[1]
    if k != (b.shape[1] if b_k_major else b.shape[0]) or n > MAX_ROW:
        raise ValueError(f"gemm_tma_layer_norm of {tuple(a.shape)} and B {tuple(b.shape)}: inner dims differ or the "
                         f"row is wider than {MAX_ROW}")
    out = torch.empty(m, n, dtype=a.dtype, device=a.device) if out is None else out
    res = None if residual is None else residual.reshape(m, n).contiguous()
    tile = config.tiles
    row_blocks = triton.cdiv(m, tile.block_m)
    tiles = row_blocks * triton.cdiv(n, tile.block_n)
    programs = max(1, min(tiles, sm_count(a.device.index or 0) * config.programs_per_sm if a.is_cuda else 4))
    counters = torch.zeros(row_blocks, dtype=torch.int32, device=a.device)
    row_n = triton.next_power_of_2(n)
    triton.set_allocator(descriptor_scratch)
    gemm_tma_layer_norm_kernel[(programs,)](
        a, b, out, channel_vector(bias, n, out), out if res is None else res, channel_vector(scale, n, out),
        channel_vector(shift, n, out), counters, m, n, k, float(eps), programs,
        B_K_MAJOR=b_k_major, HAS_BIAS=bias is not None, HAS_RES=res is not None, HAS_SHIFT=shift is not None,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m,
        SPLIT_EPILOGUE=config.split_epilogue, EVEN=m % tile.block_m == 0 and n % tile.block_n == 0,
        FLATTEN=flatten, ROW_N=row_n, NORM_ROWS=_norm_rows(tile.block_m, row_n, tile.num_warps),
        num_warps=tile.num_warps, num_stages=tile.num_stages)
    return out
