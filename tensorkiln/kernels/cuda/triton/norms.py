"""LayerNorm and RMSNorm over the trailing dims, the normalized dims flattened into rows. FP32 math.

One program per row: rows that fit one block stay in registers; longer rows are swept in blocks (LayerNorm: a sum
for the mean, a sum of squared deviations for the variance, which is exact where E[x^2] - E[x]^2 cancels, then the
write). Short rows (BERT's 768) leave such a program little to do against its launch and its reductions' latency:
the `rows` variants take a [rows, block] tile of whole rows per program, read once and written once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import MAX_TILED_ROW

MAX_SINGLE_BLOCK = 8192


@triton.jit
def layer_norm_kernel(
    y_ptr, x_ptr,  # [rows, n_cols], unit stride along a row
    w_ptr, b_ptr,  # scale [n_cols] and bias [n_cols] (b unused unless HAS_BIAS)
    stride_xr, stride_yr,
    n_cols, eps,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(axis=0).to(tl.int64)
    x_row = x_ptr + row * stride_xr
    y_row = y_ptr + row * stride_yr
    offs = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        acc += tl.load(x_row + start + offs, mask=start + offs < n_cols, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / n_cols
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        mask = start + offs < n_cols
        x = tl.load(x_row + start + offs, mask=mask, other=0.0).to(tl.float32)
        acc += tl.where(mask, (x - mean) * (x - mean), 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK_N):
        mask = start + offs < n_cols
        x = tl.load(x_row + start + offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * tl.load(w_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(b_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + start + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rms_norm_kernel(
    y_ptr, x_ptr,  # [rows, n_cols], unit stride along a row
    w_ptr,  # scale [n_cols] (unused unless HAS_SCALE)
    stride_xr, stride_yr,
    n_cols, eps,
    HAS_SCALE: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(axis=0).to(tl.int64)
    x_row = x_ptr + row * stride_xr
    y_row = y_ptr + row * stride_yr
    offs = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        x = tl.load(x_row + start + offs, mask=start + offs < n_cols, other=0.0).to(tl.float32)
        acc += x * x
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK_N):
        mask = start + offs < n_cols
        y = tl.load(x_row + start + offs, mask=mask, other=0.0).to(tl.float32) * rstd
        if HAS_SCALE:
            y *= tl.load(w_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + start + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _row_tile(x_ptr, stride_xr, n_rows, n_cols, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """The ROWS whole rows of this program as an FP32 [ROWS, BLOCK_N] tile (zeros past either end), their row and
    column offsets, and the mask of the elements that exist."""
    rows = tl.program_id(axis=0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return x, rows, cols, mask


@triton.jit
def layer_norm_rows_kernel(
    y_ptr, x_ptr, w_ptr, b_ptr, stride_xr, stride_yr, n_rows, n_cols, eps,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    x, rows, cols, mask = _row_tile(x_ptr, stride_xr, n_rows, n_cols, ROWS, BLOCK_N)
    mean = tl.sum(x, axis=1) / n_cols
    deviation = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(deviation * deviation, axis=1) / n_cols + eps)
    y = deviation * rstd[:, None] * tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_yr + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rms_norm_rows_kernel(
    y_ptr, x_ptr, w_ptr, stride_xr, stride_yr, n_rows, n_cols, eps,
    HAS_SCALE: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    x, rows, cols, mask = _row_tile(x_ptr, stride_xr, n_rows, n_cols, ROWS, BLOCK_N)
    y = x * (1.0 / tl.sqrt(tl.sum(x * x, axis=1) / n_cols + eps))[:, None]
    if HAS_SCALE:
        y *= tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_yr + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Size]:
    """x as [rows, n] (the dims from `axis` on flattened), and the normalized shape."""
    normalized = x.shape[axis % x.dim():]
    x2 = x.reshape(-1, normalized.numel())
    return (x2 if x2.stride(-1) == 1 else x2.contiguous()), normalized


def _vector(value: torch.Tensor | None, normalized: torch.Size, like: torch.Tensor) -> torch.Tensor:
    return like if value is None else value.expand(normalized).reshape(-1).contiguous()


def _launch(kernels, x, axis, vectors, eps, flags, block_n, num_warps, rows, out=None):
    """`kernels`: (the one-row kernel, the `rows` kernel); rows > 1 picks the second, for rows of at most
    MAX_TILED_ROW. `out`: a dense tensor of x's shape to store into, x itself among them (every program reads its
    rows, or each block of its row, before it stores over them)."""
    x2, normalized = _rows(x, axis)
    n_cols = x2.shape[1]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    if x2.shape[0] == 0 or n_cols == 0:
        return out
    y2 = out.view(-1, n_cols)
    operands = (y2, x2, *(_vector(v, normalized, x2) for v in vectors), x2.stride(0), y2.stride(0))
    if rows > 1:
        if n_cols > MAX_TILED_ROW:
            raise ValueError(f"rows of {n_cols} are longer than the {MAX_TILED_ROW} the `rows` kernels tile")
        block_n = triton.next_power_of_2(n_cols)
        num_warps = num_warps or max(1, min(16, rows * block_n // 512))
        kernels[1][(triton.cdiv(x2.shape[0], rows),)](*operands, x2.shape[0], n_cols, float(eps), **flags, ROWS=rows,
                                                      BLOCK_N=block_n, num_warps=num_warps)
        return out
    block_n = block_n or min(triton.next_power_of_2(n_cols), MAX_SINGLE_BLOCK)
    num_warps = num_warps or max(1, min(16, block_n // 256))
    kernels[0][(x2.shape[0],)](*operands, n_cols, float(eps), **flags, BLOCK_N=block_n, num_warps=num_warps)
    return out


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, axis: int = -1,
               eps: float = 1e-5, block_n: int | None = None, num_warps: int | None = None,
               rows: int = 1, out: torch.Tensor | None = None) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the dims from `axis` to the end (weight and bias
    broadcast to them); `rows` whole rows per program, `out` where to store (see _launch)."""
    return _launch((layer_norm_kernel, layer_norm_rows_kernel), x, axis, (weight, bias), eps,
                   dict(HAS_BIAS=bias is not None), block_n, num_warps, rows, out)


def rms_norm(x: torch.Tensor, scale: torch.Tensor | None = None, *, axis: int = -1, eps: float = 1e-6,
             block_n: int | None = None, num_warps: int | None = None, rows: int = 1) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * scale over the dims from `axis` to the end; `rows` as in layer_norm."""
    return _launch((rms_norm_kernel, rms_norm_rows_kernel), x, axis, (scale,), eps,
                   dict(HAS_SCALE=scale is not None), block_n, num_warps, rows)
