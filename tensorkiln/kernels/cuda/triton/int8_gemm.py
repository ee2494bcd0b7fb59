"""INT8 implicit-GEMM convolution (and GEMM) with the input quantized as it is loaded and the dequantization fused
into the epilogue: one kernel per quantized layer.

    y = post_activation(activation((q_x @ q_w^T) s_x s_w + bias) + residual),   q_x = round(x / s_x)

The float input x (already on the INT8 grid of s_x: a quantize-dequantize step runs before the layer, see
kernels/cuda/int8.py) is read in tiles of [BLOCK_M pixels, BLOCK_K channels] and turned into INT8 in registers, so
no INT8 copy of the activations is written; the weights are INT8 [K, R, S, C] (channels contiguous, like the NHWC
activations); tl.dot multiplies INT8 tiles into an INT32 accumulator (exact), and the epilogue scales each column
by s_x s_w[k] in FP32 before the shared epilogue (epilogue.py). A GEMM [M, K] x [K, N] is the same kernel with
H = W = R = S = 1 and the rows as the batch.

x is either on the INT8 grid already (x = q s_x, rounded to FP16 at worst: x / s_x is within 127 * 2^-11 of q) or a
float tensor whose quantize step the builder removed (plan/integer_links.py); it is quantized as that step does,
x / s_x rounded half to even and clipped, but multiplied by 1 / s_x (a division in the main loop costs MMA time),
which can move a value within one unit in the last place of a tie to the other side. An INT8 input (INPUT_INT8) is
read as it is. An integer has no NaN: a NaN input counts as 0. With OUTPUT_INT8 the result is requantized for the
next integer layer, y / scale rounded half to even and clipped, exactly as the portable kernel does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import GemmConfig
from .epilogue import _PTX, _f32_ptx, activation_code, apply_epilogue, channel_vector, float_or_zero, output_buffer
from .gemm import grouped_tile


@triton.jit
def round_half_even(x):
    """x rounded to an integer, half to even (torch.round's rule, which the quantize step uses): one cvt.rni where
    PTX runs; the same from floor in Triton's interpreter."""
    if _PTX:
        return _f32_ptx("cvt.rni.f32.f32 $0, $1;", x)
    r = tl.floor(x + 0.5)
    return tl.where((r - x == 0.5) & (r - 2.0 * tl.floor(r * 0.5) != 0.0), r - 1.0, r)


@triton.jit
def int8_conv_nhwc_kernel(
    x_ptr, w_ptr, y_ptr,  # x [N, C, H, W] float (any strides), w INT8 [K, R, S, C] dense, y [N, K, P, Q] (any strides)
    scale_ptr,  # [K] FP32: s_x s_w[k], the dequantization of output channel k
    bias_ptr, slope_ptr, res_ptr,  # epilogue: bias [K], PReLU slope [K], residual [N, K, P, Q]
    N, C, H, W, K, P, Q, R, S,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    stride_rn, stride_rc, stride_rh, stride_rw,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,  # pad_*: the begin pads (the end pads only bound P, Q)
    inv_scale,  # 1 / s_x
    out_scale,  # OUTPUT_INT8: the scale the output is stored at
    alpha, beta, post_alpha, post_beta,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr, POST_ACT: tl.constexpr,
    INPUT_INT8: tl.constexpr, OUTPUT_INT8: tl.constexpr,  # x already INT8; y stored as INT8 at out_scale
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    M = N * P * Q
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
    offs_c = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < K
    n = (offs_m // (P * Q)).to(tl.int64)
    p = (offs_m // Q) % P
    q = offs_m % Q
    ih0 = p * conv_stride_h - pad_h
    iw0 = q * conv_stride_w - pad_w
    w_rows = offs_n.to(tl.int64) * (R * S * C)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    c_blocks = tl.cdiv(C, BLOCK_K)
    for kk in range(0, R * S * c_blocks):  # one flat reduction loop over (r, s, channel block)
        rs = kk // c_blocks
        r = rs // S
        s = rs % S
        c = (kk % c_blocks) * BLOCK_K + offs_c
        ih = ih0 + r * dil_h
        iw = iw0 + s * dil_w
        inside = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # outside: the zero padding
        x_rows = n * stride_xn + ih * stride_xh + iw * stride_xw
        x_ptrs = x_ptr + x_rows[:, None] + c[None, :] * stride_xc
        if INPUT_INT8:
            a = tl.load(x_ptrs, mask=inside[:, None] & (c[None, :] < C), other=0)
        else:
            a = tl.load(x_ptrs, mask=inside[:, None] & (c[None, :] < C), other=0.0).to(tl.float32)
            a = round_half_even(a * inv_scale)
            a = tl.where(a == a, a, 0.0)  # NaN -> 0
            a = tl.minimum(tl.maximum(a, -128.0), 127.0).to(tl.int8)
        b = tl.load(w_ptr + w_rows[None, :] + (rs * C + c)[:, None], mask=(c[:, None] < C) & mask_n[None, :], other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)  # int8 x int8 -> int32 (the default out_dtype is float32)

    column_scale = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
    out = acc.to(tl.float32) * column_scale[None, :]
    res_rows = n * stride_rn + p * stride_rh + q * stride_rw
    out = apply_epilogue(out, offs_m, offs_n, mask_m, mask_n, bias_ptr, slope_ptr, res_ptr, res_rows, stride_rc,
                         alpha, beta, post_alpha, post_beta, HAS_BIAS, ACT, HAS_RES, POST_ACT)
    if OUTPUT_INT8:  # requantize: round half to even (as torch.round, the quantize step), clip
        r = round_half_even(out / out_scale)
        out = tl.minimum(tl.maximum(tl.where(r == r, r, 0.0), -128.0), 127.0)
    y_rows = n * stride_yn + p * stride_yh + q * stride_yw
    tl.store(y_ptr + y_rows[:, None] + offs_n[None, :] * stride_yc, out.to(y_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


def _launch(x4, weight, column_scales, y4, residual4, bias, geometry, input_scale: float, epilogue: dict,
            config: GemmConfig) -> None:
    """Launch over x4 [N, C, H, W], y4 [N, K, P, Q] and residual4 (y4 where there is none); geometry: (stride,
    begin pads, dilation) as pairs."""
    (n, c, h, w), (k, r, s, _), (_, _, p, q) = x4.shape, weight.shape, y4.shape
    (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w) = geometry
    grid = (triton.cdiv(n * p * q, config.block_m) * triton.cdiv(k, config.block_n),)
    activation, slope = epilogue["activation"], epilogue["prelu_slope"]
    int8_conv_nhwc_kernel[grid](
        x4, weight, y4, column_scales, channel_vector(epilogue["bias"], k, y4), channel_vector(slope, k, y4),
        residual4, n, c, h, w, k, p, q, r, s, *x4.stride(), *y4.stride(), *residual4.stride(),
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, 1.0 / input_scale, float(epilogue["output_scale"] or 1.0),
        float(epilogue["alpha"]), float(epilogue["beta"]), float_or_zero(epilogue["post_alpha"]),
        float_or_zero(epilogue["post_beta"]),
        HAS_BIAS=epilogue["bias"] is not None, ACT=activation_code(activation, slope is not None, y4.dtype),
        HAS_RES=epilogue["residual"] is not None,
        POST_ACT=activation_code(epilogue["post_activation"], out_dtype=y4.dtype),
        INPUT_INT8=x4.dtype == torch.int8, OUTPUT_INT8=y4.dtype == torch.int8,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        num_warps=config.num_warps, num_stages=config.num_stages)


def _epilogue(bias, activation, alpha, beta, prelu_slope, residual, post_activation, post_alpha, post_beta,
              output_scale) -> dict:
    return dict(bias=bias, activation=activation, alpha=alpha, beta=beta, prelu_slope=prelu_slope, residual=residual,
                post_activation=post_activation, post_alpha=post_alpha, post_beta=post_beta, output_scale=output_scale)


def _output_dtype(x: torch.Tensor, out_dtype: torch.dtype | None, output_scale: float) -> torch.dtype:
    """INT8 where the output is stored at a scale; else out_dtype, or x's (which an INT8 x cannot give)."""
    if output_scale:
        return torch.int8
    if out_dtype is None and x.dtype is torch.int8:
        raise ValueError("an INT8 input needs the output's float dtype (out_dtype)")
    return out_dtype or x.dtype


def int8_conv2d(x: torch.Tensor, weight: torch.Tensor, column_scales: torch.Tensor, input_scale: float,
                bias: torch.Tensor | None = None, *, stride, pads, dilation, config: GemmConfig,
                activation=None, alpha: float = 0.0, beta: float = 0.0, prelu_slope: torch.Tensor | None = None,
                residual: torch.Tensor | None = None, post_activation=None, post_alpha: float = 0.0,
                post_beta: float = 0.0, over_residual: bool = False, out_dtype: torch.dtype | None = None,
                output_scale: float = 0.0) -> torch.Tensor:
    """The convolution of x [N, C, H, W] (float, on the INT8 grid of input_scale; or INT8) by INT8 weights [K, R, S,
    C] with column_scales [K] = input_scale x weight scales (FP32), one group; the output is channels-last, in
    out_dtype (default x's), or INT8 at output_scale where that is given."""
    (n, c, h, w), (k, r, s, _) = x.shape, weight.shape
    top, left, bottom, right = pads
    p = (h + top + bottom - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + left + right - dilation[1] * (s - 1) - 1) // stride[1] + 1
    y = output_buffer((n, k, p, q), _output_dtype(x, out_dtype, output_scale), x.device, torch.channels_last,
                      residual, over_residual and not output_scale)
    epilogue = _epilogue(bias, activation, alpha, beta, prelu_slope, residual, post_activation, post_alpha, post_beta,
                         output_scale)
    _launch(x, weight.contiguous(), column_scales.float().contiguous(), y, y if residual is None else residual,
            bias, (tuple(stride), (top, left), tuple(dilation)), input_scale, epilogue, config)
    return y


def int8_matmul(a: torch.Tensor, weight: torch.Tensor, column_scales: torch.Tensor, input_scale: float,
                bias: torch.Tensor | None = None, *, config: GemmConfig, activation=None, alpha: float = 0.0,
                beta: float = 0.0, prelu_slope: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                post_activation=None, post_alpha: float = 0.0, post_beta: float = 0.0,
                over_residual: bool = False, out_dtype: torch.dtype | None = None,
                output_scale: float = 0.0) -> torch.Tensor:
    """a [..., K] (float, on the INT8 grid of input_scale; or INT8) @ weight^T, weight INT8 [N, K]; residual of the
    output's shape [..., N]; output dtypes as int8_conv2d. The rows are the kernel's pixels: [M, K, 1, 1] by a 1x1
    filter."""
    rows = a.reshape(-1, a.shape[-1])
    (m, k), n = rows.shape, weight.shape[0]
    y = output_buffer((*a.shape[:-1], n), _output_dtype(a, out_dtype, output_scale), a.device, residual=residual,
                      over_residual=over_residual and not output_scale)
    y2 = y.view(m, n)
    as_4d = lambda t: t.as_strided((t.shape[0], t.shape[1], 1, 1), (*t.stride(), 1, 1))  # noqa: E731
    res2 = y2 if residual is None else residual.reshape(m, n)
    epilogue = _epilogue(bias, activation, alpha, beta, prelu_slope, residual, post_activation, post_alpha, post_beta,
                         output_scale)
    _launch(as_4d(rows), weight.contiguous().view(n, 1, 1, k), column_scales.float().contiguous(), as_4d(y2),
            as_4d(res2), bias, ((1, 1), (0, 0), (1, 1)), input_scale, epilogue, config)
    return y
