"""The fused epilogue shared by the GEMM and convolution kernels:

    y = post_activation(activation(acc + bias) + residual)        (activation may be PReLU with a slope vector)

`acc` is an FP32 tile [BLOCK_M, BLOCK_N] whose columns are output channels (GEMM: the last dim). Activations are
selected by constexpr codes (ACTIVATION_CODES), so a launch compiles only the branch it uses; the math is FP32 and
mirrors kernels/cpu/activation.py, NaN and Inf included (max_nan, min_nan). The output cast happens at the store, in
the calling kernel.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ....ir.ops import ActivationType as A

NO_ACTIVATION = 0
PRELU = 100  # the slope comes from a per-channel vector, not from alpha
ACTIVATION_CODES = {None: NO_ACTIVATION, A.RELU: 1, A.SIGMOID: 2, A.TANH: 3, A.LEAKY_RELU: 4, A.ELU: 5, A.SELU: 6,
                    A.SOFTPLUS: 7, A.SOFTSIGN: 8, A.CLIP: 9, A.HARD_SIGMOID: 10, A.HARD_SWISH: 11,
                    A.SCALED_TANH: 12, A.THRESHOLDED_RELU: 13, A.GELU_ERF: 14, A.GELU_TANH: 15, A.SILU: 16,
                    A.MISH: 17, A.CELU: 18}
GELU_ERF_16BIT = 19  # GELU (erf) for 16-bit outputs: see _gelu_16bit
_HALF_OUTPUTS = (torch.float16, torch.bfloat16)


def activation_code(activation: A | None, prelu: bool = False, out_dtype: torch.dtype | None = None) -> int:
    """The constexpr code of an activation; PReLU wins over `activation` (the fused kinds set one or the other).
    `out_dtype`: the stored result's, where a cheaper formula is exact to its precision."""
    if prelu:
        return PRELU
    if activation is A.GELU_ERF and out_dtype in _HALF_OUTPUTS:
        return GELU_ERF_16BIT
    return ACTIVATION_CODES[activation]


# Triton's interpreter (the tests on a machine without a GPU) runs no PTX: there the helpers below compute the same
# function with plain operations.
_PTX = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")


@triton.jit
def _f32_ptx(instruction: tl.constexpr, x):
    return tl.inline_asm_elementwise(instruction, "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def reciprocal_ftz(x):
    """1 / x in one MUFU.RCP (rel. error 2^-23; flushes denormals), where Triton's division adds range checks."""
    return _f32_ptx("rcp.approx.ftz.f32 $0, $1;", x) if _PTX else 1.0 / x


@triton.jit
def exp2_ftz(x):
    """2^x in one MUFU.EX2 (rel. error 2^-22; flushes denormals), where tl.exp2 adds range checks."""
    return _f32_ptx("ex2.approx.ftz.f32 $0, $1;", x) if _PTX else tl.exp2(x)


@triton.jit
def _gelu_16bit(x):
    # x Phi(x) with erfc from Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7): for z = |x| / sqrt(2), erfc(z) =
    # poly(t) exp(-z^2) with t = 1 / (1 + p z), and Phi(x) = 1 - erfc(z) / 2 for x >= 0, erfc(z) / 2 below. The result
    # is off by at most |x| 7.5e-8, less than the rounding of its 16-bit store. About 14 instructions, two of them
    # MUFU, where libdevice's erff and IEEE division take about 40 (SASS of gemm_tma_kernel for sm_90): the GELU
    # epilogue of a GEMM does not overlap its MMAs, so each instruction here costs GEMM time.
    t = reciprocal_ftz(1.0 + (0.3275911 * 0.7071067811865476) * tl.abs(x))
    half_poly = t * (0.127414796 + t * (-0.142248368 + t * (0.7107068705 + t * (-0.7265760135 + t * 0.5307027145))))
    half_erfc = half_poly * exp2_ftz(x * x * -0.7213475204444817)  # exp(-x^2 / 2) = 2^(-x^2 log2(e) / 2)
    return x * tl.where(x >= 0, 1.0 - half_erfc, half_erfc)


@triton.jit
def max_nan(a, b):
    """max(a, b), NaN where either is NaN (ONNX's Max and Relu, torch.maximum). tl.maximum alone returns the other
    operand on a GPU (IEEE maxNum): a ReLU, a Clip or a max pooling would turn NaN into numbers."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def min_nan(a, b):
    """min(a, b), NaN where either is NaN (see max_nan)."""
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _tanh(x):
    # tanh from exp(-2|x|): no overflow, and no cancellation near 0 the way 2 * sigmoid(2x) - 1 has
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _softplus(x):
    # log(1 + exp(x)) without overflow; F.softplus returns x itself above 20, which this matches in FP32
    return max_nan(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def apply_activation(x, ACT: tl.constexpr, alpha, beta):
    """One activation (code ACT) of an FP32 tile; alpha and beta mean what they mean in ops.Activation."""
    if ACT == 1:  # relu
        x = max_nan(x, 0.0)
    elif ACT == 2:  # sigmoid
        x = tl.sigmoid(x)
    elif ACT == 3:  # tanh
        x = _tanh(x)
    elif ACT == 4:  # leaky_relu
        x = tl.where(x >= 0, x, x * alpha)
    elif ACT == 5:  # elu
        x = tl.where(x > 0, x, alpha * (tl.exp(x) - 1.0))
    elif ACT == 6:  # selu: beta is gamma
        x = beta * tl.where(x > 0, x, alpha * (tl.exp(x) - 1.0))
    elif ACT == 7:  # softplus
        x = _softplus(x)
    elif ACT == 8:  # softsign
        x = x / (1.0 + tl.abs(x))
    elif ACT == 9:  # clip to [alpha, beta]
        x = min_nan(max_nan(x, alpha), beta)
    elif ACT == 10:  # hard_sigmoid
        x = min_nan(max_nan(alpha * x + beta, 0.0), 1.0)
    elif ACT == 11:  # hard_swish
        x = x * min_nan(max_nan(x + 3.0, 0.0), 6.0) / 6.0
    elif ACT == 12:  # scaled_tanh
        x = alpha * _tanh(beta * x)
    elif ACT == 13:  # thresholded_relu
        x = tl.where(x > alpha, x, 0.0)
    elif ACT == 14:  # gelu (erf)
        x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    elif ACT == 15:  # gelu (tanh approximation)
        x = 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    elif ACT == 16:  # silu
        x = x * tl.sigmoid(x)
    elif ACT == 17:  # mish
        x = x * _tanh(_softplus(x))
    elif ACT == 18:  # celu
        x = max_nan(x, 0.0) + min_nan(alpha * (tl.exp(x / alpha) - 1.0), 0.0)
    elif ACT == 19:  # gelu (erf), to 16-bit precision
        x = _gelu_16bit(x)
    return x


@triton.jit
def apply_epilogue(acc, offs_m, offs_n, mask_m, mask_n,
                   bias_ptr,  # [N] bias per column (unused unless HAS_BIAS)
                   slope_ptr,  # [N] PReLU slope per column (unused unless ACT == PRELU)
                   res_ptr, res_rows, stride_rn,  # residual: [BLOCK_M] row offsets (elements) and column stride
                   alpha, beta, post_alpha, post_beta,
                   HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr, POST_ACT: tl.constexpr):
    """acc [BLOCK_M, BLOCK_N] FP32 -> the epilogue's FP32 result; rows offs_m, columns offs_n."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    if ACT == 100:  # PReLU: one slope per column
        slope = tl.load(slope_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc = tl.where(acc >= 0, acc, acc * slope[None, :])
    elif ACT != 0:
        acc = apply_activation(acc, ACT, alpha, beta)
    if HAS_RES:
        res_ptrs = res_ptr + res_rows[:, None] + offs_n[None, :] * stride_rn
        acc = acc + tl.load(res_ptrs, mask=mask_m[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
    if POST_ACT != 0:
        acc = apply_activation(acc, POST_ACT, post_alpha, post_beta)
    return acc


# ---- host side -------------------------------------------------------------------------------------------------
def output_buffer(shape, dtype: torch.dtype, device, memory_format=torch.contiguous_format,
                  residual: torch.Tensor | None = None, over_residual: bool = False) -> torch.Tensor:
    """Where the kernel stores its result: the residual itself where the caller lets it write over it and the residual
    has the output's shape, dtype and dense layout (each program reads its own residual elements in the epilogue
    before it stores those same elements, so nothing is read after it is overwritten), else a new tensor."""
    if over_residual and residual is not None and tuple(residual.shape) == tuple(shape) and residual.dtype == dtype \
            and residual.device == torch.device(device) and residual.is_contiguous(memory_format=memory_format):
        return residual
    return torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)


def channel_vector(value, channels: int, like):
    """A bias or PReLU slope as a contiguous [channels] vector (a scalar is broadcast); `like` gives the device."""
    if value is None:
        return like  # a placeholder pointer, never read: the kernel's constexpr flag is off
    flat = value.reshape(-1)
    if flat.numel() not in (1, channels):
        raise ValueError(f"a per-channel epilogue vector must hold 1 or {channels} values, not {flat.numel()}; "
                         "run this layer with the torch tactic")
    return flat.expand(channels).contiguous()


def float_or_zero(value) -> float:
    return 0.0 if value is None else float(value)
