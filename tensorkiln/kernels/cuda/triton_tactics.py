"""Triton tactics of the CUDA target: the kernels of kernels/cuda/triton/, one registry entry per tile config.

Each entry is `cuda.<layer kind>.triton_<config>`; the tactic timer (tactics/timing.py) times every candidate on
the layer's real shapes and keeps the fastest. The predicates reject what a kernel cannot do (dtype, rank,
groups, broadcast shapes of the epilogue operands) so that such layers keep the torch or library tactics.

triton is optional: this module registers its tactics only where triton is installed, and it looks for it without
importing it (importlib.util.find_spec); the kernel modules, and triton with them, are imported on the first
launch. Triton's own errors (compilation, out of shared memory) are raised as RuntimeError, which the tactic
timer reads as "this tactic cannot run here".
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import math
from typing import Callable, Sequence

import torch

from ...ir import ops
from ...ir.dtypes import DataType
from ..registry import kernel
from . import cublas
from .triton import configs as tiles



def _triton_installed() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a broken or deliberately hidden installation counts as none
        return False


TRITON_AVAILABLE = _triton_installed()
_FLOATS = (DataType.FLOAT, DataType.HALF, DataType.BF16)
_POOLS = (ops.PoolingType.MAX, ops.PoolingType.AVERAGE)
MAX_HEAD_DIM = 256  # the attention kernel keeps a [BLOCK_M, head dim] tile of Q and of the output in registers


def _triton(module: str):
    """A kernel module of kernels/cuda/triton (imported on first use: this is where triton gets imported)."""
    return importlib.import_module(f"{__package__}.triton.{module}")


def _launch(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as error:
        if type(error).__module__.split(".")[0] == "triton":
            raise RuntimeError(f"Triton kernel {getattr(fn, '__name__', fn)} failed: {error}") from error
        raise


def _five(inputs) -> list:
    return (list(inputs) + [None] * 5)[:5]


# ---- predicates: (op, input tensors of the IR) -> can the kernel serve this layer ------------------------------
def _floats(tensors) -> bool:
    return all(t is None or t.dtype in _FLOATS for t in tensors)


def _channel_vector(tensor, rank: int, axis: int) -> bool:
    """None, or a tensor whose only non-1 dim is `axis` of an output of `rank` dims (one value per channel)."""
    if tensor is None:
        return True
    shape = (1,) * (rank - len(tensor.shape)) + tuple(tensor.shape)
    return len(shape) == rank and all(d == 1 for i, d in enumerate(shape) if i != axis)


def _conv_ok(op, inputs, depthwise: bool) -> bool:
    x, weight, bias, residual, slope = _five(inputs)
    if x is None or weight is None or len(x.shape) != 4 or len(weight.shape) != 4 or len(op.stride) != 2:
        return False
    if not _floats([x, weight, bias, residual, slope]) or not _channel_vector(slope, 4, 1):
        return False
    if bias is not None and len(bias.shape) != 1:
        return False
    channels = x.shape[1]
    if depthwise:
        return op.groups == channels > 1 and weight.shape[1] == 1 and weight.shape[0] % channels == 0
    return op.groups == 1


def _igemm_ok(op, inputs) -> bool:
    return _conv_ok(op, inputs, depthwise=False)


def _conv_problem(op, inputs) -> tuple[int, int, int] | None:
    """(M, N, K) of the implicit GEMM the convolution is (None where the igemm kernel cannot serve it)."""
    if not _igemm_ok(op, inputs):
        return None
    (n, c, h, w), (k, _, r, s) = inputs[0].shape, inputs[1].shape
    p = (h + op.pads[0] + op.pads[2] - op.dilation[0] * (r - 1) - 1) // op.stride[0] + 1
    q = (w + op.pads[1] + op.pads[3] - op.dilation[1] * (s - 1) - 1) // op.stride[1] + 1
    return n * p * q, k, c * r * s


def _matmul_problem(op, inputs) -> tuple[int, int, int] | None:
    """(batch x M, N, K) of the GEMM (None where the GEMM kernel cannot serve it)."""
    if not _matmul_ok(op, inputs):
        return None
    a, b = list(inputs[0].shape), list(inputs[1].shape)
    a = [1, *a] if len(a) == 1 else a[:-2] + a[:-3:-1] if op.transpose_a else a
    b = [*b, 1] if len(b) == 1 else b[:-2] + b[:-3:-1] if op.transpose_b else b
    batch = math.prod(max(x, y) for x, y in zip([1] * (len(b) - len(a)) + a[:-2], [1] * (len(a) - len(b)) + b[:-2]))
    return batch * a[-2], b[-1], a[-1]


# below this many output elements (32 tiles of 64x64) most of a ~132-SM GPU (an H100) idles without split-K. Each
# candidate costs build time (a compile per epilogue variant and split): at 64 tiles, ResNet-50's batch-1 cold build
# took 20.6 s and split-K won only layers of 8 tiles there; BERT-base's batch-1 FFN down-projections gain from it
SPLIT_K_MAX_OUTPUT = 32 * 64 * 64


def _split_k_pays(problem: Callable, op, inputs, config) -> bool:
    """Split-K is a candidate where the output is too small to fill the GPU and K has room for every split to run at
    least two blocks (otherwise the partial sums cost more than they save)."""
    mnk = problem(op, inputs)
    if mnk is None:
        return False
    m, n, k = mnk
    count = -(-m // config.block_m) * -(-n // config.block_n)
    return m * n < SPLIT_K_MAX_OUTPUT and -(-k // config.block_k) >= 2 * tiles.split_k_for(config, count)


def _depthwise_ok(op, inputs) -> bool:
    return _conv_ok(op, inputs, depthwise=True)


def _matmul_ok(op, inputs) -> bool:
    a, b, bias, residual, slope = _five(inputs)
    if a is None or b is None or not _floats([a, b, bias, residual, slope]):
        return False
    rank = max(len(a.shape), len(b.shape), 2)
    return _channel_vector(bias, rank, rank - 1) and _channel_vector(slope, rank, rank - 1)


def _pooling_ok(op, inputs) -> bool:
    x = inputs[0]
    return op.type in _POOLS and x is not None and len(x.shape) == 4 and len(op.kernel) == 2 and _floats([x])


def _global_pooling_ok(op, inputs) -> bool:
    x = inputs[0]
    return op.type in _POOLS and x is not None and len(x.shape) >= 3 and _floats([x])


def _softmax_ok(op, inputs) -> bool:
    x = inputs[0]
    return x is not None and len(x.shape) >= 1 and op.axis % len(x.shape) == len(x.shape) - 1 and _floats([x])


def _norm_ok(op, inputs, config=None) -> bool:
    x = inputs[0]
    if x is None or len(x.shape) < 1 or not _floats(inputs):
        return False
    # several rows per program only where a row fits the tile
    return config is None or config.rows == 1 or math.prod(x.shape[op.axis % len(x.shape):]) <= tiles.MAX_TILED_ROW


def _attention_ok(op, inputs) -> bool:
    q, k, v, mask = (list(inputs) + [None] * 4)[:4]
    if q is None or k is None or v is None or min(len(q.shape), len(k.shape), len(v.shape)) < 2:
        return False
    if op.has_mask and (mask is None or not (mask.dtype in _FLOATS or mask.dtype is DataType.BOOL)):
        return False
    return _floats([q, k, v]) and max(q.shape[-1], v.shape[-1]) <= MAX_HEAD_DIM


def _pointwise_ok(op, inputs) -> bool:
    if not inputs or any(t is None for t in inputs) or not _floats(inputs):
        return False
    return _triton("pointwise").unsupported_reason(op.program) is None


# ---- kernels: fn(op, inputs) -> [output] -----------------------------------------------------------------------
def _epilogue(op, residual, slope) -> dict:
    return dict(activation=None if op.prelu else op.activation, alpha=op.alpha, beta=op.beta,
                prelu_slope=slope if op.prelu else None, residual=residual if op.residual else None,
                post_activation=op.post_activation, post_alpha=op.post_alpha, post_beta=op.post_beta)


def fused_convolution(op: ops.FusedConvolution, inputs, config):
    x, weight, bias, residual, slope = _five(inputs)
    return [_launch(_triton("conv").conv2d, x, weight, bias, stride=op.stride, pads=op.pads, dilation=op.dilation,
                    groups=op.groups, config=config, over_residual=op.residual_in_place,
                    **_epilogue(op, residual, slope))]


def convolution(op: ops.Convolution, inputs, config):
    x, weight, bias = (list(inputs) + [None])[:3]
    return [_launch(_triton("conv").conv2d, x, weight, bias, stride=op.stride, pads=op.pads, dilation=op.dilation,
                    groups=op.groups, config=config)]


def fused_matmul(op: ops.FusedMatMul, inputs, config):
    a, b, bias, residual, slope = _five(inputs)
    return [_launch(_triton("gemm").gemm, a, b, transpose_a=op.transpose_a, transpose_b=op.transpose_b, bias=bias,
                    config=config, over_residual=op.residual_in_place, **_epilogue(op, residual, slope))]


def matrix_multiply(op: ops.MatrixMultiply, inputs, config):
    a, b = inputs[:2]
    return [_launch(_triton("gemm").gemm, a, b, transpose_a=op.transpose_a, transpose_b=op.transpose_b,
                    config=config)]


def pooling(op: ops.Pooling, inputs, config):
    return [_launch(_triton("pooling").pool2d, inputs[0], is_max=op.type is ops.PoolingType.MAX, kernel=op.kernel,
                    stride=op.stride, pads=op.pads, dilation=op.dilation, ceil_mode=op.ceil_mode,
                    count_include_pad=op.count_include_pad, config=config)]


def global_pooling(op: ops.GlobalPooling, inputs, config):
    return [_launch(_triton("pooling").global_pool, inputs[0], is_max=op.type is ops.PoolingType.MAX, config=config)]


def softmax(op: ops.Softmax, inputs, config):
    return [_launch(_triton("softmax").softmax, inputs[0], log=op.log, block_n=config.block_n or None,
                    num_warps=config.num_warps or None)]


def layer_norm(op: ops.LayerNorm, inputs, config):
    x, weight, bias = (list(inputs) + [None])[:3]
    if weight is None:  # the reference allows a missing scale: scale by one
        weight = x.new_ones(x.shape[op.axis % x.dim():])
    return [_launch(_triton("norms").layer_norm, x, weight, bias, axis=op.axis, eps=op.epsilon,
                    block_n=config.block_n or None, num_warps=config.num_warps or None, rows=config.rows)]


def rms_norm(op: ops.RMSNorm, inputs, config):
    x, scale = (list(inputs) + [None])[:2]
    return [_launch(_triton("norms").rms_norm, x, scale, axis=op.axis, eps=op.epsilon,
                    block_n=config.block_n or None, num_warps=config.num_warps or None, rows=config.rows)]


def attention(op: ops.Attention, inputs, config):
    q, k, v, mask = (list(inputs) + [None])[:4]
    return [_launch(_triton("attention").attention, q, k, v, mask if op.has_mask else None, scale=op.scale,
                    causal=op.causal, nan_to_zero=op.nan_to_zero, grouped_kv=op.grouped_kv, config=config)]


def fused_pointwise(op: ops.FusedPointwise, inputs, config):
    return [_launch(_triton("pointwise").fused_pointwise, op.program, list(inputs), block=config.block,
                    num_warps=config.num_warps)]


# ---- the persistent TMA GEMM (Hopper): large 1x1 convolutions, and GEMMs whose epilogue cuBLASLt cannot fuse ------
# ResNet-50 b256's layer1 conv3 (with its residual and ReLU) took 0.306 ms on it, 0.405 ms on the implicit GEMM; the
# whole engine 6.26 against 6.62 ms (bench/ab.py on an H200). For matmuls it is a candidate only where cuBLASLt cannot
# run the whole epilogue (BERT's erf GELU; a bias with a residual): BERT-base b128 ran in 6.61 against 6.79 ms
# without it, its twelve FFN up-projections in 1.89 against 2.09 ms (`bench/ab.py --variant notma=~tma`, H200).
# TMA_MIN_TILES: output tiles below which one persistent program per SM leaves a ~132-SM GPU idle; smaller problems
# (every batch-1 layer) leave it to cuDNN, cuBLAS and the implicit GEMM, and their builds compile nothing more
TMA_MIN_TILES = 128


@functools.cache
def _hopper() -> bool:
    """TMA needs compute capability 9.0 or later."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)


def _tma_conv_ok(op, inputs, config) -> bool:
    """A 1x1 convolution, stride 1, no padding (a GEMM [N H W, C] x [C, K] over channels-last activations) of at
    least TMA_MIN_TILES tiles and at least one tile wide (narrower outputs waste most of each tile and a compile:
    ResNet-50's 64-channel 1x1 convolutions took 299 us on it, 129 us on cuBLASLt), with rows 16-byte aligned in
    16-bit types (C and K multiples of 8), and a residual of the output's shape; no PReLU (no slope operand)."""
    x, weight, bias, residual, slope = _five(inputs)
    if not _igemm_ok(op, inputs) or tuple(weight.shape[2:]) != (1, 1) or tuple(op.stride) != (1, 1) or any(op.pads) \
            or op.prelu:
        return False
    (n, c, h, w), k, tile = x.shape, weight.shape[0], config.tiles
    tiles = -(-(n * h * w) // tile.block_m) * -(-k // tile.block_n)
    return (_hopper() and tiles >= TMA_MIN_TILES and k >= tile.block_n and c % 8 == 0 and k % 8 == 0
            and (not op.residual or (residual is not None and tuple(residual.shape) == (n, k, h, w))))


def _tma_matmul_ok(op, inputs, config) -> bool:
    """A GEMM of at least TMA_MIN_TILES tiles (A [..., K] by a 2-D B) whose epilogue cuBLASLt cannot run whole (the
    erf GELU; a bias and a residual), 16-byte aligned rows in 16-bit types, and no PReLU."""
    a, b, bias, residual, slope = _five(inputs)
    if not _matmul_ok(op, inputs) or op.transpose_a or len(b.shape) != 2 or op.prelu \
            or cublas.runs_whole_epilogue(op, bias is not None):
        return False
    (k, n), tile = (b.shape[::-1] if op.transpose_b else b.shape), config.tiles
    m = math.prod(a.shape[:-1])
    tiles = -(-m // tile.block_m) * -(-n // tile.block_n)
    return (_hopper() and tiles >= TMA_MIN_TILES and a.shape[-1] == k and k % 8 == 0 and n % 8 == 0
            and (not op.residual or (residual is not None and tuple(residual.shape) == (*a.shape[:-1], n))))


def _tma_gemm(op, rows: torch.Tensor, b: torch.Tensor, b_k_major: bool, bias, residual_rows, config) -> torch.Tensor:
    """The layer's GEMM and epilogue on the TMA GEMM: rows [M, K] by b, residual_rows [M, N] (stored over where the
    plan lets the layer)."""
    if rows.dtype not in (torch.float16, torch.bfloat16):
        raise NotImplementedError("the TMA GEMM takes FP16/BF16 operands (an FP32 layer keeps another tactic)")
    return _launch(_triton("gemm_tma").gemm_tma, rows, b.to(rows.dtype).contiguous(), b_k_major=b_k_major, bias=bias,
                   config=config, out=residual_rows if op.residual_in_place else None, activation=op.activation,
                   alpha=op.alpha, beta=op.beta, residual=residual_rows, post_activation=op.post_activation,
                   post_alpha=op.post_alpha, post_beta=op.post_beta)


def pointwise_convolution_tma(op: ops.FusedConvolution, inputs, config):
    x, weight, bias, residual = _five(inputs)[:4]
    n, c, h, w = x.shape
    as_rows = lambda t: t.permute(0, 2, 3, 1).reshape(n * h * w, -1).contiguous()  # noqa: E731 (channels-last: a view)
    y = _tma_gemm(op, as_rows(x), weight.reshape(weight.shape[0], c), True, bias,
                  as_rows(residual) if op.residual else None, config)
    return [y.view(n, h, w, -1).permute(0, 3, 1, 2)]  # NCHW-shaped, channels-last in memory


def fused_matmul_tma(op: ops.FusedMatMul, inputs, config):
    a, b, bias, residual = _five(inputs)[:4]
    shape = (*a.shape[:-1], b.shape[0] if op.transpose_b else b.shape[1])
    y = _tma_gemm(op, a.reshape(-1, a.shape[-1]).contiguous(), b, op.transpose_b, bias,
                  residual.reshape(-1, shape[-1]).contiguous() if op.residual else None, config)
    return [y.view(shape)]


# ---- the tactic table: (layer kind, family, kernel, predicate, candidate configs) ------------------------------
TACTICS: tuple[tuple[type[ops.OpAttrs], str, Callable, Callable, tuple], ...] = (
    (ops.FusedConvolution, "igemm", fused_convolution, _igemm_ok, tiles.CONV_CONFIGS),
    (ops.FusedConvolution, "depthwise", fused_convolution, _depthwise_ok, tiles.DEPTHWISE_CONFIGS),
    (ops.Convolution, "igemm", convolution, _igemm_ok, tiles.CONV_CONFIGS),
    (ops.Convolution, "depthwise", convolution, _depthwise_ok, tiles.DEPTHWISE_CONFIGS),
    (ops.FusedMatMul, "gemm", fused_matmul, _matmul_ok, tiles.GEMM_CONFIGS),
    (ops.MatrixMultiply, "gemm", matrix_multiply, _matmul_ok, tiles.GEMM_CONFIGS),
    (ops.Pooling, "nhwc", pooling, _pooling_ok, tiles.POOL_CONFIGS),
    (ops.GlobalPooling, "nhwc", global_pooling, _global_pooling_ok, tiles.GLOBAL_POOL_CONFIGS),
    (ops.Softmax, "row", softmax, _softmax_ok, tiles.ROW_CONFIGS),
    (ops.LayerNorm, "row", layer_norm, _norm_ok, tiles.NORM_CONFIGS),
    (ops.RMSNorm, "row", rms_norm, _norm_ok, tiles.NORM_CONFIGS),
    (ops.Attention, "flash", attention, _attention_ok, tiles.ATTENTION_CONFIGS),
    (ops.FusedPointwise, "generated", fused_pointwise, _pointwise_ok, tiles.POINTWISE_CONFIGS),
)


# split-K variants of the GEMM kernels: their predicate also reads the config (the tile count decides)
SPLIT_K_TACTICS: tuple[tuple[type[ops.OpAttrs], Callable, Callable], ...] = (
    (ops.FusedConvolution, fused_convolution, _conv_problem),
    (ops.Convolution, convolution, _conv_problem),
    (ops.FusedMatMul, fused_matmul, _matmul_problem),
    (ops.MatrixMultiply, matrix_multiply, _matmul_problem),
)


def tactic_impl(family: str, config) -> str:
    return f"triton_{family}_{config.name}"


def _bind(fn: Callable, config) -> Callable[[ops.OpAttrs, Sequence], list]:
    def run(op, inputs):
        return fn(op, inputs, config)

    run.__name__ = run.__qualname__ = fn.__name__
    return run


# the predicates that also read the config
_READ_CONFIG = {_norm_ok}
# the kernels that honour op.residual_in_place (their epilogue reads each residual element before it stores it)
_OVER_RESIDUAL = {fused_convolution, fused_matmul}


def _register() -> None:
    for op_class, family, fn, supports, configs in TACTICS:
        for config in configs:
            kernel(op_class, target="cuda", impl=tactic_impl(family, config),
                   supports=functools.partial(supports, config=config) if supports in _READ_CONFIG else supports,
                   writes_over_residual=fn in _OVER_RESIDUAL)(_bind(fn, config))
    for config in tiles.TMA_GEMM_CONFIGS:
        kernel(ops.FusedConvolution, target="cuda", impl=tactic_impl("gemm", config), writes_over_residual=True,
               supports=functools.partial(_tma_conv_ok, config=config))(_bind(pointwise_convolution_tma, config))
        kernel(ops.FusedMatMul, target="cuda", impl=tactic_impl("gemm", config), writes_over_residual=True,
               supports=functools.partial(_tma_matmul_ok, config=config))(_bind(fused_matmul_tma, config))
    for op_class, fn, problem in SPLIT_K_TACTICS:
        for config in tiles.SPLIT_K_CONFIGS:
            kernel(op_class, target="cuda", impl=tactic_impl("splitk", config),
                   supports=functools.partial(_split_k_pays, problem, config=config),
                   writes_over_residual=fn in _OVER_RESIDUAL)(_bind(fn, config))


if TRITON_AVAILABLE:
    _register()
