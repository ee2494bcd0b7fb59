"""Which CPU layers run on the calling thread alone: one rule for the static executor, which runs them so, and the
tactic timer, which must time them as they will run.

Below SERIAL_BELOW_MACS multiply-adds a convolution or matrix product runs on one thread: waking the other OpenMP
threads (they sleep, see cpu_threads.py) costs about 80 us a parallel region on the 2-core development VM (a 64K-
element add: 9 us on one thread, 87 us on two), and on a shared machine a team member that is not scheduled stalls
the layer. Measured on 2 cores (medians, ms, 2M -> 30M): UltraFace RFB 10.2 -> 7.8, MobileNetV2 (all its layers then
on one thread) 16.7 -> 11.0 quiet and 12.3 -> 10.7 with another process spinning, PP-OCR det 640 72 -> 71-76,
ResNet-50 (2 of its 54 layers under 30M) 48.6 -> 48.9.
"""
from __future__ import annotations

import math
from typing import Sequence

from ...ir import ops

SERIAL_BELOW_MACS = 30_000_000
_CONVOLUTIONS = (ops.FusedConvolution, ops.Convolution)
_MATRIX_PRODUCTS = (ops.FusedMatMul, ops.MatrixMultiply)


def runs_on_one_thread(op, input_shapes: Sequence[tuple[int, ...] | None],
                       output_shapes: Sequence[tuple[int, ...]]) -> bool | None:
    """Whether a layer runs on one thread (True), on the context's threads (False), or as the step before it (None:
    layers whose kernels split work by their own grain size, e.g. elementwise ones under 32768 elements)."""
    if (not isinstance(op, _CONVOLUTIONS + _MATRIX_PRODUCTS) or len(input_shapes) < 2 or None in input_shapes[:2]
            or not output_shapes):
        return None
    weight, out = tuple(input_shapes[1]), tuple(output_shapes[0])
    if min((*weight, *out), default=0) < 0 or not weight or not out:
        return None
    if isinstance(op, _CONVOLUTIONS):
        reduced = math.prod(weight[1:])  # input channels per group times the kernel window
    else:
        a = input_shapes[0]
        reduced = (a[-2] if op.transpose_a else a[-1]) if len(a) >= 2 else a[-1] if a else 1
    return math.prod(out) * reduced < SERIAL_BELOW_MACS
