"""CUDA tactics of fused_add_layer_norm (an add, then LayerNorm over the last dim; a transformer's embeddings): the
Triton row-tile kernel (triton/add_layer_norm.py) with the norms' row counts per program (configs.NORM_CONFIGS), timed
against the portable torch kernel. Registered only where triton is installed; the kernel module is imported on the
first launch, as in triton_tactics.py."""
from __future__ import annotations

import math

from ...ir import ops
from ...ir.dtypes import DataType
from ..registry import kernel
from .triton import configs as tiles
from .triton_tactics import TRITON_AVAILABLE, _bind, _launch, _triton, tactic_impl

_FLOATS = (DataType.FLOAT, DataType.HALF, DataType.BF16)


def _fits(op: ops.FusedAddLayerNorm, inputs) -> bool:
    """Float operands, a row the tile holds, scale and shift one value per column (or one value)."""
    x, addend, scale, shift = (list(inputs) + [None] * 4)[:4]
    if x is None or addend is None or scale is None or not x.shape or len(addend.shape) > len(x.shape):
        return False
    if any(t is not None and t.dtype not in _FLOATS for t in (x, addend, scale, shift)):
        return False
    columns = x.shape[-1]
    return 0 < columns <= tiles.MAX_TILED_ROW and all(
        t is None or math.prod(t.shape) in (1, columns) for t in (scale, shift))


def add_layer_norm(op: ops.FusedAddLayerNorm, inputs, config):
    x, addend, scale, shift = (list(inputs) + [None] * 4)[:4]
    return [_launch(_triton("add_layer_norm").add_layer_norm, x, addend, scale, shift, eps=op.epsilon,
                    rows=config.rows, num_warps=config.num_warps or None)]


if TRITON_AVAILABLE:
    for _config in tiles.NORM_CONFIGS:
        kernel(ops.FusedAddLayerNorm, target="cuda", impl=tactic_impl("addln", _config), supports=_fits)(
            _bind(add_layer_norm, _config))
