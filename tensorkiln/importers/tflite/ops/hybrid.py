"""Dynamic-range ("hybrid") quantization: float activations into an op whose weights are int8.

TFLite's hybrid kernels quantize the float input to int8 at run time, one scale per batch (per row for
FULLY_CONNECTED), multiply in integers and scale the sums back. tensorkiln reproduces the input's rounding in float
(the snapped input times the dequantized weights gives the same sums): asymmetric where TFLite's kernel is
(per-channel convolutions, depthwise, FULLY_CONNECTED with asymmetric_quantize_inputs), symmetric otherwise."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import ReduceOperation as R
from ....ir.ops import UnaryOperation as U


def is_hybrid(ctx, input_position: int, weight_position: int) -> bool:
    """A float input meets weights stored as int8: TFLite runs its hybrid kernel."""
    x, weights = ctx.input_record(input_position), ctx.input_record(weight_position)
    return (x is not None and weights is not None and x.dtype.kind == "f" and weights.is_quantized
            and weights.data is not None)


def snap_input(ctx, x, symmetric: bool, batch_rank: int = 1):
    """`x` rounded as TFLite's hybrid kernel quantizes it: one int8 scale per index of the first `batch_rank`
    dims (computed from the run-time values), real values back out."""
    net = ctx.network
    axes = tuple(range(batch_rank, len(x.shape)))

    def const(value):
        return net.add_constant(None, np.asarray(value, np.float32), name=ctx.name + ".hybrid").get_output(0)

    def op(a, b, operation):
        return net.add_elementwise(a, b, operation, name=ctx.name).get_output(0)

    def reduce(t, operation):
        return net.add_reduce(t, operation, axes, keep_dims=True, name=ctx.name).get_output(0)

    def unary(t, operation):
        return net.add_unary(t, operation, name=ctx.name).get_output(0)

    zero = const(0.0)
    if symmetric:  # q = round(x * 127 / max|x|) in [-127, 127]
        limit = reduce(unary(x, U.ABS), R.MAX)
        scale = op(limit, const(127.0), E.DIV)
        scale = op(scale, const(np.finfo(np.float32).tiny), E.MAX)  # an all-zero row stays zero
        q = op(op(unary(op(x, scale, E.DIV), U.ROUND), const(-127.0), E.MAX), const(127.0), E.MIN)
        return op(q, scale, E.PROD)
    # asymmetric: the range [min(x, 0), max(x, 0)] over 255 steps, zero point round(-128 - min / scale)
    low, high = op(reduce(x, R.MIN), zero, E.MIN), op(reduce(x, R.MAX), zero, E.MAX)
    scale = op(op(op(high, low, E.SUB), const(255.0), E.DIV), const(np.finfo(np.float32).tiny), E.MAX)
    zero_point = unary(op(const(-128.0), op(low, scale, E.DIV), E.SUB), U.ROUND)
    zero_point = op(op(zero_point, const(-128.0), E.MAX), const(127.0), E.MIN)
    q = op(unary(op(x, scale, E.DIV), U.ROUND), zero_point, E.SUM)
    q = op(op(q, const(-128.0), E.MAX), const(127.0), E.MIN)
    return op(op(q, zero_point, E.SUB), scale, E.PROD)
