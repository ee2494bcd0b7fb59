"""CUDA tactics of fused_matmul_layer_norm (a GEMM with its bias and residual, then LayerNorm over the last dim).

Three kinds compete in the tactic timer:
- `cublaslt_norm_<rows config>`: the layer as it ran before the fusion, back to back: the cuBLASLt GEMM (a residual
  without a bias is one GEMM accumulating into it where the plan lets the layer store over its residual; see
  cublas.py), then the Triton row kernel of the LayerNorm (norms.py, each of its tile configs), in place there. The
  fusion never costs the engine more than this.
- `triton_gemmln_<gemm config>`: one kernel, the norm in the GEMM's epilogue (triton/gemm_layer_norm.py), on the
  GEMM tiles of the plain Triton GEMM and its split-K config for small batches (whose output is too small to fill
  the GPU: a batch-1 transformer's 128 rows), and 16-row tiles without split-K for small outputs whose K is short.

All are registered only where triton is installed (the portable torch kernel serves everywhere). Kernel modules are
imported on the first launch, as in triton_tactics.py.
"""
from __future__ import annotations

import functools
import math

import torch

from ...ir import ops
from ...ir.dtypes import DataType
from ..registry import kernel
from . import cublas
from .triton import configs as tiles
from .triton_tactics import (SPLIT_K_MAX_OUTPUT, TMA_MIN_TILES, TRITON_AVAILABLE, _bind, _hopper, _launch,
                             _split_k_pays, _triton, tactic_impl)

_FLOATS = (DataType.FLOAT, DataType.HALF, DataType.BF16)
MAX_ROW = 8192  # triton/gemm_layer_norm.py's MAX_ROW (that module imports triton: not imported here)


def _operands(inputs):
    return (list(inputs) + [None] * 6)[:6]


def _columns(op, b) -> int:
    return b.shape[0] if op.transpose_b else b.shape[1]


def _per_column(tensor, columns: int) -> bool:
    return tensor is None or math.prod(tensor.shape) in (1, columns)


def _fusable(op: ops.FusedMatMulLayerNorm, inputs) -> bool:
    """Float operands, a 2-D b, per-column bias, scale and shift, a residual of the output's shape."""
    a, b, bias, residual, scale, shift = _operands(inputs)
    if a is None or b is None or scale is None or len(b.shape) != 2 or len(a.shape) < 1:
        return False
    if any(t is not None and t.dtype not in _FLOATS for t in (a, b, bias, residual, scale, shift)):
        return False
    columns = _columns(op, b)
    out_shape = (*a.shape[:-1], columns)
    if op.residual and (residual is None or tuple(residual.shape) != out_shape):
        return False
    return all(_per_column(t, columns) for t in (bias, scale, shift)) and 0 < columns <= MAX_ROW


def _problem(op, inputs) -> tuple[int, int, int] | None:
    """(M, N, K) of the layer's GEMM, None where these tactics cannot serve it (triton_tactics._split_k_pays reads
    it)."""
    if not _fusable(op, inputs):
        return None
    a = inputs[0]
    return math.prod(a.shape[:-1]), _columns(op, inputs[1]), a.shape[-1]


# small outputs (a batch-1 transformer's 128 x 768) without split-K, whose K is too short for it to pay (BERT-base's
# attention output projection, K 768): 16-row tiles give 96 programs where 64 x 64 tiles give 24
SMALL_OUTPUT_CONFIGS = (tiles.GemmConfig(16, 64, 128, 8, 4, 3),)


def _small_output(op, inputs) -> bool:
    problem = _problem(op, inputs)
    return problem is not None and problem[0] * problem[1] < SPLIT_K_MAX_OUTPUT


def _matmul_part(op: ops.FusedMatMulLayerNorm) -> ops.FusedMatMul:
    return ops.FusedMatMul(transpose_b=op.transpose_b, residual=op.residual, residual_in_place=op.residual_in_place)


def library_then_norm(op: ops.FusedMatMulLayerNorm, inputs, config):
    a, b, bias, residual, scale, shift = _operands(inputs)
    y = cublas.fused_matmul_cublaslt(_matmul_part(op), [a, b, bias, residual if op.residual else None])[0]
    # where the GEMM accumulated into the residual (the plan lets this layer store over it), the norm stays there
    in_place = op.residual_in_place and residual is not None and y.data_ptr() == residual.data_ptr()
    return [_launch(_triton("norms").layer_norm, y, scale.reshape(-1).expand(y.shape[-1]),
                    None if shift is None else shift.reshape(-1).expand(y.shape[-1]), axis=-1, eps=op.epsilon,
                    block_n=config.block_n or None, num_warps=config.num_warps or None, rows=config.rows,
                    out=y if in_place else None)]


def gemm_with_norm(op: ops.FusedMatMulLayerNorm, inputs, config):
    a, b, bias, residual, scale, shift = _operands(inputs)
    return [_launch(_triton("gemm_layer_norm").gemm_layer_norm, a, b.to(a.dtype), scale, shift, bias=bias,
                    residual=residual if op.residual else None, eps=op.epsilon, transpose_b=op.transpose_b,
                    config=config, over_residual=op.residual_in_place)]


def _tma_ok(op, inputs, config) -> bool:
    """At least TMA_MIN_TILES output tiles (a persistent program per SM), K and N multiples of 8 (TMA's 16-byte
    rows in 16-bit types), on Hopper or later."""
    if not _fusable(op, inputs) or not _hopper():
        return False
    (m, n, k), tile = _problem(op, inputs), config.tiles
    return -(-m // tile.block_m) * -(-n // tile.block_n) >= TMA_MIN_TILES and k % 8 == 0 and n % 8 == 0


def _tma_gemm_with_norm(op: ops.FusedMatMulLayerNorm, inputs, config, flatten: bool):
    a, b, bias, residual, scale, shift = _operands(inputs)
    if a.dtype not in (torch.float16, torch.bfloat16):
        raise NotImplementedError("the TMA GEMM takes FP16/BF16 operands (an FP32 layer keeps another tactic)")
    n = _columns(op, b)
    rows = a.reshape(-1, a.shape[-1]).contiguous()
    residual_rows = residual.reshape(-1, n).contiguous() if op.residual else None
    out = residual_rows if op.residual_in_place and residual_rows is not None else None
    y = _launch(_triton("gemm_layer_norm").gemm_tma_layer_norm, rows, b.to(a.dtype).contiguous(), scale, shift,
                b_k_major=op.transpose_b, bias=bias, residual=residual_rows, eps=op.epsilon, config=config,
                flatten=flatten, out=out)
    return [y.view(*a.shape[:-1], n)]


def tma_gemm_with_norm(op: ops.FusedMatMulLayerNorm, inputs, config):
    return _tma_gemm_with_norm(op, inputs, config, flatten=False)


def tma_flat_gemm_with_norm(op: ops.FusedMatMulLayerNorm, inputs, config):
    return _tma_gemm_with_norm(op, inputs, config, flatten=True)


def _register() -> None:
    kind = ops.FusedMatMulLayerNorm
    for config in tiles.NORM_CONFIGS:
        kernel(kind, target="cuda", impl=f"cublaslt_norm_{config.name}", supports=_fusable,
               writes_over_residual=True)(_bind(library_then_norm, config))
    for config in tiles.GEMM_CONFIGS:
        kernel(kind, target="cuda", impl=tactic_impl("gemmln", config), supports=_fusable,
               writes_over_residual=True)(_bind(gemm_with_norm, config))
    for config in SMALL_OUTPUT_CONFIGS:
        kernel(kind, target="cuda", impl=tactic_impl("gemmlnsmall", config), supports=_small_output,
               writes_over_residual=True)(_bind(gemm_with_norm, config))
    for config in tiles.SPLIT_K_CONFIGS:
        kernel(kind, target="cuda", impl=tactic_impl("gemmlnsplitk", config), writes_over_residual=True,
               supports=functools.partial(_split_k_pays, _problem, config=config))(_bind(gemm_with_norm, config))
    # the persistent TMA GEMM's config, its tile loop flattened (gemm_tma.py's form) and not (in case the norm's
    # branch inside the loop keeps Triton from flattening it: a compile error is a tactic that cannot run)
    for config in tiles.TMA_GEMM_CONFIGS:
        for suffix, fn in (("", tma_gemm_with_norm), ("_flat", tma_flat_gemm_with_norm)):
            kernel(kind, target="cuda", impl=tactic_impl("gemmln", config) + suffix, writes_over_residual=True,
                   supports=functools.partial(_tma_ok, config=config))(_bind(fn, config))


if TRITON_AVAILABLE:
    _register()
