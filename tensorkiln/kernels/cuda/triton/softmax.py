"""Row softmax (and log-softmax) over the last dim, for any row length.

A row that fits one block (BLOCK_N >= n_cols) is read once into registers; longer rows take two sweeps: an online
pass keeps the running maximum and the sum of exponentials rescaled to it (as flash attention does), then a
second pass writes exp(x - max) / sum. Math is FP32 whatever the storage type.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_SINGLE_BLOCK = 8192  # longer rows loop in blocks of this size instead of holding the row in registers


@triton.jit
def softmax_kernel(
    y_ptr, x_ptr,  # y, x: [rows, n_cols], unit stride along a row
    stride_xr, stride_yr,  # elements between consecutive rows
    n_cols,
    LOG: tl.constexpr,  # log-softmax instead of softmax
    SINGLE_BLOCK: tl.constexpr,  # the whole row fits one block
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(axis=0).to(tl.int64)
    x_row = x_ptr + row * stride_xr
    y_row = y_ptr + row * stride_yr
    offs = tl.arange(0, BLOCK_N)
    if SINGLE_BLOCK:
        x = tl.load(x_row + offs, mask=offs < n_cols, other=float("-inf")).to(tl.float32)
        shifted = x - tl.max(x, axis=0)
        e = tl.exp(shifted)
        total = tl.sum(e, axis=0)
        y = shifted - tl.log(total) if LOG else e / total
        tl.store(y_row + offs, y.to(y_ptr.dtype.element_ty), mask=offs < n_cols)
    else:
        running_max = tl.full([], float("-inf"), tl.float32)
        total = tl.full([], 0.0, tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            x = tl.load(x_row + start + offs, mask=start + offs < n_cols, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(running_max, tl.max(x, axis=0))
            # while every value so far is -inf, the sum stays 0 (exp(-inf - -inf) would be NaN)
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            total = total * tl.exp(running_max - safe_max) + tl.sum(tl.exp(x - safe_max), axis=0)
            running_max = new_max
        log_total = tl.log(total)
        for start in range(0, n_cols, BLOCK_N):
            mask = start + offs < n_cols
            x = tl.load(x_row + start + offs, mask=mask, other=float("-inf")).to(tl.float32)
            shifted = x - running_max
            y = shifted - log_total if LOG else tl.exp(shifted) / total
            tl.store(y_row + start + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def softmax(x: torch.Tensor, log: bool = False, block_n: int | None = None, num_warps: int | None = None
            ) -> torch.Tensor:
    """softmax (or log_softmax) of `x` over its last dim. block_n: the block size (default: the row, rounded up to a
    power of two, capped at MAX_SINGLE_BLOCK)."""
    n_cols = x.shape[-1]
    x2 = x.reshape(-1, n_cols)
    if n_cols > 1 and x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x2.shape[0] == 0 or n_cols == 0:
        return out
    y2 = out.view(-1, n_cols)
    block_n = block_n or min(triton.next_power_of_2(n_cols), MAX_SINGLE_BLOCK)
    num_warps = num_warps or max(1, min(16, block_n // 256))
    softmax_kernel[(x2.shape[0],)](y2, x2, x2.stride(0), y2.stride(0), n_cols, LOG=log,
                                   SINGLE_BLOCK=block_n >= n_cols, BLOCK_N=block_n, num_warps=num_warps)
    return out
