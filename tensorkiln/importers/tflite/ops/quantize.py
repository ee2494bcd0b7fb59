"""QUANTIZE, DEQUANTIZE, FAKE_QUANT, CAST.

tensorkiln computes quantized models in float: QUANTIZE's float output is snapped onto its output's grid by
the parser (QuantizeLinear -> DequantizeLinear with the model's scale and zero point), and DEQUANTIZE passes
the float value on; quantized constants were dequantized at import."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ActivationType as A
from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import UnaryOperation as U
from ..registry import converter


@converter("QUANTIZE", "DEQUANTIZE")
def requantize(ctx, op):
    x = ctx.input(0)
    if ctx.value(0) is not None:  # a quantized constant (weights in float16 or int8): dequantized already
        return [ctx.cast(x, ctx.output_dtype())]
    return [ctx.network.add_identity(ctx.cast(x, ctx.output_dtype()), name=ctx.name).get_output(0)]


@converter("CAST")
def cast(ctx, op):
    return [ctx.cast(ctx.input(0), ctx.output_dtype())]


@converter("FAKE_QUANT")
def fake_quant(ctx, op):
    # round(clamp(x, min, max) / step) * step on TensorFlow's nudged grid of 2^bits levels
    lo, hi, bits = float(ctx.option("Min", -6.0)), float(ctx.option("Max", 6.0)), int(ctx.option("NumBits", 8))
    levels = (1 << bits) - 1 - int(bool(ctx.option("NarrowRange", False)))
    low = 1.0 if ctx.option("NarrowRange", False) else 0.0
    step = (hi - lo) / levels
    zero = min(max(round(low - lo / step), low), low + levels)
    lo, hi = (low - zero) * step, (low + levels - zero) * step
    net = ctx.network
    y = net.add_activation(ctx.input(0), A.CLIP, lo, hi, name=ctx.name).get_output(0)
    offset = net.add_constant(None, np.asarray(lo, np.float32), name=ctx.name + ".min").get_output(0)
    scale = net.add_constant(None, np.asarray(step, np.float32), name=ctx.name + ".step").get_output(0)
    y = net.add_elementwise(net.add_elementwise(y, offset, E.SUB, name=ctx.name).get_output(0), scale, E.DIV,
                            name=ctx.name).get_output(0)
    y = net.add_unary(net.add_elementwise(y, _half(ctx), E.SUM, name=ctx.name).get_output(0), U.FLOOR,
                      name=ctx.name).get_output(0)
    y = net.add_elementwise(y, scale, E.PROD, name=ctx.name).get_output(0)
    return [net.add_elementwise(y, offset, E.SUM, name=ctx.name).get_output(0)]


def _half(ctx):
    return ctx.network.add_constant(None, np.asarray(0.5, np.float32), name=ctx.name + ".half").get_output(0)
