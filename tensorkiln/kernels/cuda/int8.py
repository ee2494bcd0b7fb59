"""INT8 tactics on cuBLASLt (`torch._int_mm`: int8 x int8 -> int32) for the layers an INT8 build quantized.

A quantized fused convolution or GEMM carries `int8_input_scale` s_x and, as inputs 5 and 6, its weights as
per-channel INT8 q_w with their scales s_w (ops/optimized.py, passes/quantize_int8.py). It computes on its input
quantized at s_x, q_x = clip(round(x / s_x)) (exactly the grid values where a quantize-dequantize step ran before it;
an INT8 input from a linked integer layer, plan/integer_links.py, is q_x itself), so

    y = epilogue(x @ w)  with  x = q_x s_x, w[:, k] = q_w[k] s_w[k]   equals   epilogue((q_x @ q_w^T) s_x s_w + bias)

and the integer product is exact in INT32 (127^2 K stays far below 2^31 for any K below 130,000). The bias,
activation, residual and post activation follow in FP32 then the output's dtype (torch ops: a few kernels more than
the float tactics' fused epilogues; the Triton tactic in int8_gemm.py fuses all of it); a linked layer's
int8_output_scale stores the result as INT8 for the next integer layer. The tactic timer weighs these against the float kernels on the same layer, so a
tactic that is not faster loses.

cuBLASLt's INT8 GEMM needs M > 16 rows and K, N multiples of 8 (torch checks them); the predicates keep other shapes
on the float kernels. These are plain PyTorch: on CPU tensors they run too (torch._int_mm has a CPU kernel), which is
how CI checks them (tests/kernels/test_int8_kernels_cpu.py).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ...ir import ops
from ..cpu.conv import split_pads
from ..cpu.fused import apply_epilogue
from ..cpu.int8_io import quantized_output
from ..integer import INTEGER_IMPLS, integer_kernel, is_integer_tactic  # noqa: F401 (the tests' names)
from . import triton_tactics
from .triton import configs as tiles

INT8_MIN, INT8_MAX = -128, 127
MIN_ROWS = 17  # torch._int_mm on CUDA: "self.size(0) needs to be greater than 16"
ALIGNMENT = 8  # ... and K and N multiples of 8
INTEGER_INPUTS = 7  # x, weights, bias, residual, slope, INT8 weights, their scales


# ---- the shared arithmetic ----------------------------------------------------------------------------------------
def _column_scales(op, weight_scales: torch.Tensor) -> torch.Tensor:
    """s_x s_w per output channel, FP32 (the scales come as the int32 bits of float32 values: ops/optimized.py)."""
    return weight_scales.view(torch.float32) * op.int8_input_scale


def quantize_input(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The INT8 grid values of x (x / scale rounded half to even, as the quantize step rounds, and clipped); an INT8
    input (from an integer layer before: cpu/int8_io.py) is that already."""
    if x.dtype is torch.int8:
        return x
    return torch.round(x.float() / scale).clamp_(INT8_MIN, INT8_MAX).to(torch.int8)


def dequantize_epilogue(op, acc: torch.Tensor, weight_scales: torch.Tensor, bias: torch.Tensor | None,
                        residual: torch.Tensor | None, slope: torch.Tensor | None, out_dtype: torch.dtype,
                        as_output=lambda y: y) -> torch.Tensor:
    """epilogue(acc s_x s_w + bias) in `out_dtype` (INT8 at int8_output_scale where the layer has one): acc [rows, N]
    INT32, s_w [N]; `as_output` reshapes the [rows, N] result to the layer's output (before the residual and
    activations, which broadcast in its shape)."""
    column_scales = _column_scales(op, weight_scales)
    if bias is None:
        y = acc * column_scales  # int32 x float32: one kernel, FP32 result
    else:
        y = torch.addcmul(bias.float(), acc, column_scales)
    y = as_output(y.to(out_dtype))
    return quantized_output(op, apply_epilogue(op, y, residual, slope))


def integer_operands_ok(op, inputs) -> bool:
    """The layer carries the integer kernels' operands: int8_input_scale, a floating input, INT8 weights and their
    scales; and an epilogue these tactics run (a PReLU slope or residual of the output's shape, or none)."""
    if not getattr(op, "int8_input_scale", 0.0) or len(inputs) != INTEGER_INPUTS:
        return False
    x, q, scales = inputs[0], inputs[5], inputs[6]
    return (x is not None and q is not None and scales is not None and (x.dtype.is_floating or x.dtype.value == "int8")
            and q.dtype.value == "int8" and scales.dtype.value == "int32" and len(scales.shape) == 1)


def _bias_ok(bias, columns: int) -> bool:
    return bias is None or tuple(bias.shape) in ((columns,), (1,))


def _slope_ok(op, slope, columns: int) -> bool:
    return not op.prelu or (slope is not None and math.prod(slope.shape) in (1, columns))


# ---- GEMM: fused matrix products with a 2-D constant b -----------------------------------------------------------
def _matmul_problem(op, inputs) -> tuple[int, int, int] | None:
    """(M, N, K) of the INT8 GEMM, None where these tactics cannot serve the layer."""
    if not integer_operands_ok(op, inputs) or op.transpose_a:
        return None
    a, q, bias, residual, slope = inputs[0], inputs[5], inputs[2], inputs[3], inputs[4]
    if len(a.shape) < 2 or len(q.shape) != 2 or a.shape[-1] != q.shape[1]:
        return None
    n, k = q.shape
    m = math.prod(a.shape[:-1])
    out_shape = (*a.shape[:-1], n)
    if op.residual and (residual is None or tuple(residual.shape) != out_shape):
        return None
    if not _bias_ok(bias, n) or not _slope_ok(op, slope, n):
        return None
    return m, n, k


def _cublas_matmul_ok(op, inputs) -> bool:
    problem = _matmul_problem(op, inputs)
    return problem is not None and _cublas_shape_ok(*problem)


def _cublas_shape_ok(m: int, n: int, k: int) -> bool:
    return m >= MIN_ROWS and n % ALIGNMENT == 0 and k % ALIGNMENT == 0


def int8_matmul(op: ops.FusedMatMul, inputs) -> list[torch.Tensor]:
    a, _, bias, residual, slope, q, weight_scales = inputs
    rows = quantize_input(a.reshape(-1, a.shape[-1]), op.int8_input_scale)
    acc = torch._int_mm(rows, q.t())  # q [N, K] row-major: B column-major, cuBLASLt's fastest INT8 layout ("TN")
    shape = (*a.shape[:-1], q.shape[0])
    return [dequantize_epilogue(op, acc, weight_scales, bias, residual if op.residual else None, slope,
                                inputs[1].dtype, lambda y: y.view(shape))]


# ---- convolutions over NHWC activations: a GEMM over the output pixels --------------------------------------------
def conv_output_size(op, x_shape, q_shape) -> tuple[int, int]:
    (_, _, h, w), (_, r, s, _) = x_shape, q_shape
    p = (h + op.pads[0] + op.pads[2] - op.dilation[0] * (r - 1) - 1) // op.stride[0] + 1
    q = (w + op.pads[1] + op.pads[3] - op.dilation[1] * (s - 1) - 1) // op.stride[1] + 1
    return p, q


def _conv_problem(op, inputs) -> tuple[int, int, int] | None:
    """(M = N P Q, N = K filters, K = R S C) of the convolution as a GEMM, None where these tactics cannot serve it."""
    if not integer_operands_ok(op, inputs) or op.groups != 1 or len(op.stride) != 2:
        return None
    x, q, bias, residual, slope = inputs[0], inputs[5], inputs[2], inputs[3], inputs[4]
    if len(x.shape) != 4 or len(q.shape) != 4 or q.shape[3] != x.shape[1]:
        return None
    p, qq = conv_output_size(op, x.shape, q.shape)
    filters = q.shape[0]
    if p <= 0 or qq <= 0 or not _bias_ok(bias, filters) or not _slope_ok(op, slope, filters):
        return None
    if op.residual and (residual is None or tuple(residual.shape) != (x.shape[0], filters, p, qq)):
        return None
    return x.shape[0] * p * qq, filters, math.prod(q.shape[1:])


def _is_pointwise(op, q_shape) -> bool:
    return tuple(q_shape[1:3]) == (1, 1) and not any(op.pads) and tuple(op.dilation) == (1, 1)


def _cublas_pointwise_ok(op, inputs) -> bool:
    problem = _conv_problem(op, inputs)
    return problem is not None and _is_pointwise(op, inputs[5].shape) and _cublas_shape_ok(*problem)


def _cublas_im2col_ok(op, inputs) -> bool:
    problem = _conv_problem(op, inputs)
    return problem is not None and not _is_pointwise(op, inputs[5].shape) and _cublas_shape_ok(*problem)


def _nhwc_int8(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x [N, C, H, W] (channels-last in an NHWC engine) quantized, as a dense [N, H, W, C] INT8 tensor."""
    return quantize_input(x.permute(0, 2, 3, 1), scale).contiguous()


def _conv_result(op, acc, inputs, n: int, p: int, q: int, dtype) -> list[torch.Tensor]:
    """The layer's output from the [N P Q, K] INT32 product: NCHW-shaped, channels-last in memory (as NHWC engines
    hold their activations)."""
    _, _, bias, residual, slope, _, weight_scales = inputs
    return [dequantize_epilogue(op, acc, weight_scales, bias, residual if op.residual else None, slope, dtype,
                                lambda y: y.view(n, p, q, -1).permute(0, 3, 1, 2))]


def int8_pointwise_convolution(op: ops.FusedConvolution, inputs) -> list[torch.Tensor]:
    """A 1x1 convolution: the GEMM [N P Q, C] x [C, K]; a stride picks every sh-th row and sw-th column first."""
    x, q = inputs[0], inputs[5]
    pixels = _nhwc_int8(x, op.int8_input_scale)[:, ::op.stride[0], ::op.stride[1], :]
    n, p, qq, c = pixels.shape
    acc = torch._int_mm(pixels.reshape(n * p * qq, c), q.view(q.shape[0], c).t())
    return _conv_result(op, acc, inputs, n, p, qq, inputs[1].dtype)


def im2col_nhwc(x: torch.Tensor, op, kernel_size: tuple[int, int], p: int, q: int) -> torch.Tensor:
    """The [N P Q, R S C] patch matrix of NHWC `x` [N, H, W, C] (zero padding), (r, s, c) order as the INT8 weights
    [K, R, S, C]: one strided view of the padded input, copied once."""
    (top, left), (bottom, right) = split_pads(op.pads)
    padded = F.pad(x, (0, 0, left, right, top, bottom))
    n, hp, wp, c = padded.shape
    (r, s), (sh, sw), (dh, dw) = kernel_size, op.stride, op.dilation
    patches = padded.as_strided((n, p, q, r, s, c), (hp * wp * c, sh * wp * c, sw * c, dh * wp * c, dw * c, 1))
    return patches.reshape(n * p * q, r * s * c)


def int8_im2col_convolution(op: ops.FusedConvolution, inputs) -> list[torch.Tensor]:
    """Any 2-D convolution of one group: im2col of the INT8 input, then one INT8 GEMM."""
    x, q = inputs[0], inputs[5]
    p, qq = conv_output_size(op, x.shape, q.shape)
    columns = im2col_nhwc(_nhwc_int8(x, op.int8_input_scale), op, tuple(q.shape[1:3]), p, qq)
    acc = torch._int_mm(columns, q.reshape(q.shape[0], -1).t())
    return _conv_result(op, acc, inputs, x.shape[0], p, qq, inputs[1].dtype)


# ---- the Triton kernel (triton/int8_gemm.py): quantized on load, dequantized in the fused epilogue -------------------
# INT8 tensor-core MMAs take K steps of 32; larger tiles for the large layers (ResNet-50 b256: M = 200k to 800k
# pixels), the 64 x 64 tile for batch-1 layers (M = 49 to 3136)
TRITON_CONFIGS = (tiles.GemmConfig(128, 128, 64, 8, 8, 3), tiles.GemmConfig(128, 64, 64, 8, 4, 4),
                  tiles.GemmConfig(64, 64, 64, 8, 4, 3))


def _triton_epilogue(op, inputs) -> dict:
    _, weight, bias, residual, slope = inputs[:5]
    return dict(out_dtype=weight.dtype, output_scale=op.int8_output_scale, bias=bias,
                activation=None if op.prelu else op.activation, alpha=op.alpha, beta=op.beta,
                prelu_slope=slope if op.prelu else None, residual=residual if op.residual else None,
                post_activation=op.post_activation, post_alpha=op.post_alpha, post_beta=op.post_beta,
                over_residual=op.residual_in_place)


def triton_int8_convolution(op: ops.FusedConvolution, inputs, config) -> list[torch.Tensor]:
    x, q = inputs[0], inputs[5]
    kernels = triton_tactics._triton("int8_gemm")
    return [triton_tactics._launch(kernels.int8_conv2d, x, q, _column_scales(op, inputs[6]), op.int8_input_scale,
                                   stride=op.stride, pads=op.pads, dilation=op.dilation, config=config,
                                   **_triton_epilogue(op, inputs))]


def triton_int8_matmul(op: ops.FusedMatMul, inputs, config) -> list[torch.Tensor]:
    a, q = inputs[0], inputs[5]
    kernels = triton_tactics._triton("int8_gemm")
    return [triton_tactics._launch(kernels.int8_matmul, a, q, _column_scales(op, inputs[6]), op.int8_input_scale,
                                   config=config, **_triton_epilogue(op, inputs))]


# ---- the TMA form (triton/int8_gemm_tma.py, Hopper): 1x1 convolutions and GEMMs over dense INT8 rows ------------
TMA_CONFIGS = (tiles.TmaGemmConfig(tiles.GemmConfig(128, 128, 128, 8, 8, 3)),
               tiles.TmaGemmConfig(tiles.GemmConfig(128, 256, 128, 8, 8, 3)),
               tiles.TmaGemmConfig(tiles.GemmConfig(128, 128, 128, 8, 4, 4), programs_per_sm=2))


def _tma_problem_ok(problem, config) -> bool:
    """Hopper, TMA's INT8 alignment, and enough output tiles for one persistent program per SM (as the FP16 TMA
    GEMM's TMA_MIN_TILES: batch-1 layers stay on the other kernels)."""
    if problem is None or not triton_tactics._hopper():
        return False
    m, n, k = problem
    tile = config.tiles
    return k % 16 == 0 and n % 16 == 0 and -(-m // tile.block_m) * -(-n // tile.block_n) >= triton_tactics.TMA_MIN_TILES


def _tma_conv_ok(op, inputs, config) -> bool:
    problem = _conv_problem(op, inputs)
    return (problem is not None and _is_pointwise(op, inputs[5].shape) and tuple(op.stride) == (1, 1)
            and not op.prelu and _tma_problem_ok(problem, config))


def _tma_matmul_ok(op, inputs, config) -> bool:
    return not op.prelu and _tma_problem_ok(_matmul_problem(op, inputs), config)


def _tma_rows(op, rows: torch.Tensor, q: torch.Tensor, inputs, residual_rows, config) -> torch.Tensor:
    """The [M, N] result of the layer over dense rows [M, K] (INT8 already, or quantized here: one pass more, which
    the timer charges to this tactic where no link makes the input INT8)."""
    _, weight, bias, _, _, _, weight_scales = inputs
    kernels = triton_tactics._triton("int8_gemm_tma")
    return triton_tactics._launch(
        kernels.int8_gemm_tma, quantize_input(rows, op.int8_input_scale), q, _column_scales(op, weight_scales),
        config=config, out_dtype=weight.dtype, bias=bias, activation=op.activation, alpha=op.alpha, beta=op.beta,
        residual=residual_rows, post_activation=op.post_activation, post_alpha=op.post_alpha,
        post_beta=op.post_beta, output_scale=op.int8_output_scale,
        out=residual_rows if op.residual_in_place and not op.int8_output_scale else None)


def tma_int8_pointwise_convolution(op: ops.FusedConvolution, inputs, config) -> list[torch.Tensor]:
    x, q, residual = inputs[0], inputs[5], inputs[3]
    n, c, h, w = x.shape
    as_rows = lambda t: t.permute(0, 2, 3, 1).reshape(n * h * w, -1)  # noqa: E731 (channels-last: a view)
    y = _tma_rows(op, as_rows(x), q.view(q.shape[0], c), inputs, as_rows(residual) if op.residual else None, config)
    return [y.view(n, h, w, -1).permute(0, 3, 1, 2)]  # NCHW-shaped, channels-last in memory


def tma_int8_matmul(op: ops.FusedMatMul, inputs, config) -> list[torch.Tensor]:
    a, q, residual = inputs[0], inputs[5], inputs[3]
    shape = (*a.shape[:-1], q.shape[0])
    rows_of = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    return [_tma_rows(op, rows_of(a), q, inputs, rows_of(residual) if op.residual else None, config).view(shape)]


def _conv_ok(op, inputs) -> bool:
    return _conv_problem(op, inputs) is not None


def _matmul_ok(op, inputs) -> bool:
    return _matmul_problem(op, inputs) is not None


def _integer_kernel(op_class, impl: str, supports, fn, **kwargs) -> None:
    integer_kernel(op_class, "cuda", impl, supports, fn, **kwargs)


def _register() -> None:
    _integer_kernel(ops.FusedMatMul, "cublaslt_int8_gemm", _cublas_matmul_ok, int8_matmul)
    _integer_kernel(ops.FusedConvolution, "cublaslt_int8_1x1", _cublas_pointwise_ok, int8_pointwise_convolution)
    _integer_kernel(ops.FusedConvolution, "cublaslt_int8_im2col", _cublas_im2col_ok, int8_im2col_convolution)
    if not triton_tactics.TRITON_AVAILABLE:
        return
    for config in TRITON_CONFIGS:
        _integer_kernel(ops.FusedConvolution, triton_tactics.tactic_impl("int8conv", config), _conv_ok,
                        triton_tactics._bind(triton_int8_convolution, config), writes_over_residual=True)
        _integer_kernel(ops.FusedMatMul, triton_tactics.tactic_impl("int8gemm", config), _matmul_ok,
                        triton_tactics._bind(triton_int8_matmul, config), writes_over_residual=True)
    for config in TMA_CONFIGS:
        _integer_kernel(ops.FusedConvolution, triton_tactics.tactic_impl("int8", config),
                        functools.partial(_tma_conv_ok, config=config),
                        triton_tactics._bind(tma_int8_pointwise_convolution, config), writes_over_residual=True)
        _integer_kernel(ops.FusedMatMul, triton_tactics.tactic_impl("int8", config),
                        functools.partial(_tma_matmul_ok, config=config),
                        triton_tactics._bind(tma_int8_matmul, config), writes_over_residual=True)


_register()
