"""2-D max and average pooling on NHWC (channels_last) activations, and global average / max pooling.

A program owns a tile of [BLOCK_PIX output pixels, BLOCK_C channels]: with channels_last data every load of the
window loop is contiguous along the channels. Window cells outside the input read -inf (max) or 0 (average);
average pooling divides by the cells inside the input, or inside the declared pads with count_include_pad, never
counting the ceil-mode overhang (ONNX semantics, as kernels/cpu/pooling.py). A max over cells holding NaN is NaN.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...cpu.pooling import pooled_size
from .configs import GLOBAL_POOL_CONFIGS, POOL_CONFIGS, TileConfig
from .epilogue import max_nan


@triton.jit
def pool2d_nhwc_kernel(
    y_ptr, x_ptr,  # y [N, C, P, Q], x [N, C, H, W], logical NCHW order, any strides
    N, C, H, W, P, Q,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    KH, KW, pool_stride_h, pool_stride_w, dil_h, dil_w,
    pad_h, pad_w, pad_h_end, pad_w_end,  # declared pads (begin, end)
    IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr,
    BLOCK_PIX: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_m = tl.program_id(axis=0) * BLOCK_PIX + tl.arange(0, BLOCK_PIX)
    offs_c = tl.program_id(axis=1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = offs_m < N * P * Q
    mask_c = offs_c < C
    n = (offs_m // (P * Q)).to(tl.int64)
    p = (offs_m // Q) % P
    q = offs_m % Q
    if IS_MAX:
        acc = tl.full((BLOCK_PIX, BLOCK_C), float("-inf"), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_PIX, BLOCK_C), dtype=tl.float32)
    count = tl.zeros((BLOCK_PIX,), dtype=tl.float32)
    for r in range(0, KH):
        ih = p * pool_stride_h - pad_h + r * dil_h
        for s in range(0, KW):
            iw = q * pool_stride_w - pad_w + s * dil_w
            inside = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            ptrs = x_ptr + (n * stride_xn + ih * stride_xh + iw * stride_xw)[:, None] + offs_c[None, :] * stride_xc
            tile_mask = inside[:, None] & mask_c[None, :]
            if IS_MAX:
                x = tl.load(ptrs, mask=tile_mask, other=float("-inf")).to(tl.float32)
                acc = max_nan(acc, x)  # a window holding NaN pools to NaN, as torch and numpy compute
            else:
                acc += tl.load(ptrs, mask=tile_mask, other=0.0).to(tl.float32)
                if COUNT_INCLUDE_PAD:
                    counted = (ih >= -pad_h) & (ih < H + pad_h_end) & (iw >= -pad_w) & (iw < W + pad_w_end)
                else:
                    counted = inside
                count += counted.to(tl.float32)
    if not IS_MAX:
        acc = acc / tl.where(mask_m, count, 1.0)[:, None]  # rows past the end: no 0 / 0
    y_ptrs = y_ptr + (n * stride_yn + p * stride_yh + q * stride_yw)[:, None] + offs_c[None, :] * stride_yc
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_c[None, :])


@triton.jit
def global_pool_kernel(
    y_ptr, x_ptr,  # y [N, C], x [N, C, HW] (the spatial dims flattened), any strides
    C, HW,
    stride_xn, stride_xc, stride_xs,
    stride_yn, stride_yc,
    IS_MAX: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n = tl.program_id(axis=0).to(tl.int64)
    offs_c = tl.program_id(axis=1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_s = tl.arange(0, BLOCK_HW)
    mask_c = offs_c < C
    if IS_MAX:
        acc = tl.full((BLOCK_HW, BLOCK_C), float("-inf"), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    for start in range(0, HW, BLOCK_HW):
        s = start + offs_s
        ptrs = x_ptr + n * stride_xn + s[:, None] * stride_xs + offs_c[None, :] * stride_xc
        mask = (s[:, None] < HW) & mask_c[None, :]
        if IS_MAX:
            acc = max_nan(acc, tl.load(ptrs, mask=mask, other=float("-inf")).to(tl.float32))
        else:
            acc += tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if IS_MAX:
        result = tl.reduce(acc, 0, max_nan)  # tl.max would drop NaN on a GPU
    else:
        result = tl.sum(acc, axis=0) / HW
    tl.store(y_ptr + n * stride_yn + offs_c * stride_yc, result.to(y_ptr.dtype.element_ty), mask=mask_c)


def pool2d(x: torch.Tensor, *, is_max: bool, kernel, stride, pads, dilation=(1, 1), ceil_mode: bool = False,
           count_include_pad: bool = False, config: TileConfig = POOL_CONFIGS[0]) -> torch.Tensor:
    """ONNX MaxPool / AveragePool on [N, C, H, W] (pads = (h_begin, w_begin, h_end, w_end)); channels_last output."""
    N, C, H, W = x.shape
    P = pooled_size(H, kernel[0], stride[0], pads[0], pads[2], dilation[0], ceil_mode)
    Q = pooled_size(W, kernel[1], stride[1], pads[1], pads[3], dilation[1], ceil_mode)
    out = torch.empty((N, C, P, Q), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    if min(N, C, P, Q) <= 0:
        return out
    grid = (triton.cdiv(N * P * Q, config.block_pix), triton.cdiv(C, config.block_c))
    pool2d_nhwc_kernel[grid](out, x, N, C, H, W, P, Q, *x.stride(), *out.stride(), *kernel, *stride, *dilation,
                             *pads, IS_MAX=is_max, COUNT_INCLUDE_PAD=count_include_pad,
                             BLOCK_PIX=config.block_pix, BLOCK_C=config.block_c, num_warps=config.num_warps)
    return out


def global_pool(x: torch.Tensor, *, is_max: bool = False, config: TileConfig = GLOBAL_POOL_CONFIGS[0]
                ) -> torch.Tensor:
    """Mean (or max) over every dim after the channel dim of [N, C, *spatial]; the spatial dims are kept as 1."""
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)
    out_memory = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
    out = torch.empty((N, C) + (1,) * (x.dim() - 2), dtype=x.dtype, device=x.device, memory_format=out_memory)
    if N == 0 or C == 0:
        return out
    y2 = out.as_strided((N, C), (out.stride(0), out.stride(1)))
    grid = (N, triton.cdiv(C, config.block_c))
    global_pool_kernel[grid](y2, x3, C, x3.shape[2], *x3.stride(), *y2.stride(), IS_MAX=is_max,
                             BLOCK_HW=config.block_pix, BLOCK_C=config.block_c, num_warps=config.num_warps)
    return out
