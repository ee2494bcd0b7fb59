"""Add + LayerNorm over the last dim in one pass: y = layer_norm(x + addend) * scale + shift (ops.FusedAddLayerNorm).

A transformer's embeddings: x the gathered word embeddings [B, S, H], the addend their position (and token-type)
embeddings [1, S, H] or [S, H], the same for every sequence. Each program takes ROWS whole rows as one tile (norms.py's
`rows` kernels), adds the addend's matching rows (row r of x reads row r mod R of an addend of R rows: broadcast over
the leading dims without a copy), normalizes in FP32 and stores once: the sum never reaches memory.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import MAX_TILED_ROW


@triton.jit
def add_layer_norm_kernel(
    y_ptr, x_ptr, addend_ptr,  # y, x [n_rows, n_cols] and the addend [addend_rows, n_cols], unit column strides
    w_ptr, b_ptr,  # scale [n_cols], shift [n_cols] (unused unless HAS_SHIFT)
    stride_xr, stride_yr, stride_ar,
    n_rows, n_cols, addend_rows, eps,
    HAS_SHIFT: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(axis=0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    addend_row = rows % addend_rows
    x += tl.load(addend_ptr + addend_row[:, None] * stride_ar + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / n_cols
    deviation = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(deviation * deviation, axis=1) / n_cols + eps)
    y = deviation * rstd[:, None] * tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_SHIFT:
        y += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_yr + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def _addend_rows(addend: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The addend as [R, n_cols] rows that x's rows (flattened, row-major) repeat over: itself where it matches x's
    trailing dims (leading dims of 1 aside), else broadcast to x's shape (a copy)."""
    shape = list(addend.shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    if shape and tuple(shape) == tuple(x.shape[x.dim() - len(shape):]):
        return addend.reshape(-1, x.shape[-1]).contiguous()
    return addend.expand(x.shape).reshape(-1, x.shape[-1]).contiguous()


def add_layer_norm(x: torch.Tensor, addend: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None, *,
                   eps: float = 1e-5, rows: int = 4, num_warps: int | None = None) -> torch.Tensor:
    """layer_norm(x + addend) over the last dim, times scale, plus shift (one value per column, or one value);
    `rows` whole rows per program."""
    n_cols = x.shape[-1]
    if n_cols > MAX_TILED_ROW:
        raise ValueError(f"rows of {n_cols} are longer than the {MAX_TILED_ROW} this kernel tiles; use another tactic")
    x2 = x.reshape(-1, n_cols).contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x2.shape[0] == 0 or n_cols == 0:
        return out
    a2 = _addend_rows(addend.to(x.dtype), x)
    y2 = out.view(-1, n_cols)
    vector = lambda v: v.reshape(-1).expand(n_cols).contiguous()  # noqa: E731
    block_n = triton.next_power_of_2(n_cols)
    add_layer_norm_kernel[(triton.cdiv(x2.shape[0], rows),)](
        y2, x2, a2, vector(scale), x2 if shift is None else vector(shift), x2.stride(0), y2.stride(0), a2.stride(0),
        x2.shape[0], n_cols, a2.shape[0], float(eps), HAS_SHIFT=shift is not None, ROWS=rows, BLOCK_N=block_n,
        num_warps=num_warps or max(1, min(16, rows * block_n // 512)))
    return out
