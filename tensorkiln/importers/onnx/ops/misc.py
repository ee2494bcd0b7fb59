"""Shrink, Swish, EyeLike, Det, GridSample, QuantizeLinear, DequantizeLinear."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ....ir import ops
from ....ir.dtypes import DataType
from ....ir.ops import ActivationType as A
from ....ir.ops import ElementWiseOperation as E
from ..registry import converter
from ..tensors import FP8_TYPES
from ..types import onnx_to_datatype

# the opset whose QuantizeLinear takes output_dtype: the reference node that rounds to an FP8 grid uses it
_FP8_REFERENCE_OPSET = 21


def _scalar(ctx, value, like):
    return ctx.network.add_constant((), np.array(value, dtype=like.dtype.numpy)).get_output(0)


@converter("Shrink")
def shrink(ctx, node):
    x = ctx.input(node, 0)
    bias, lambd = float(ctx.attr(node, "bias", 0.0)), float(ctx.attr(node, "lambd", 0.5))
    net, name = ctx.network, ctx.name(node)
    # y = x + bias where x < -lambd; x - bias where x > lambd; 0 elsewhere
    below = net.add_elementwise(x, _scalar(ctx, -lambd, x), E.LESS, name=name).get_output(0)
    above = net.add_elementwise(x, _scalar(ctx, lambd, x), E.GREATER, name=name).get_output(0)
    plus = net.add_elementwise(x, _scalar(ctx, bias, x), E.SUM, name=name).get_output(0)
    minus = net.add_elementwise(x, _scalar(ctx, bias, x), E.SUB, name=name).get_output(0)
    upper = net.add_select(above, minus, _scalar(ctx, 0, x), name=name).get_output(0)
    return [net.add_select(below, plus, upper, name=name).get_output(0)]


@converter("Swish")
def swish(ctx, node):
    x = ctx.input(node, 0)
    alpha = float(ctx.attr(node, "alpha", 1.0))
    if alpha == 1.0:
        return [ctx.network.add_activation(x, A.SILU, name=ctx.name(node)).get_output(0)]
    net, name = ctx.network, ctx.name(node)
    scaled = net.add_elementwise(x, _scalar(ctx, alpha, x), E.PROD, name=name).get_output(0)
    gate = net.add_activation(scaled, A.SIGMOID, name=name).get_output(0)
    return [net.add_elementwise(x, gate, E.PROD, name=name).get_output(0)]


@converter("EyeLike")
def eye_like(ctx, node):
    x = ctx.input(node, 0)
    dtype = x.dtype if ctx.attr(node, "dtype") is None else onnx_to_datatype(ctx.attr(node, "dtype"), "EyeLike")
    value = np.eye(x.shape[0], x.shape[1], k=ctx.attr(node, "k", 0), dtype=dtype.numpy)
    return [ctx.network.add_constant(None, value, name=node.output[0]).get_output(0)]


@converter("Det")
def det(ctx, node):
    return ctx.network.add_layer(ops.Determinant(), [ctx.input(node, 0)], ctx.name(node)).outputs


_GRID_MODES = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest", "cubic": "bicubic",
               "bicubic": "bicubic"}


@converter("GridSample")
def grid_sample(ctx, node):
    x = ctx.input(node, 0)
    if len(x.shape) != 4:
        raise ctx.error(node, "only 4-D (2 spatial dims) GridSample is supported")
    op = ops.GridSample(ctx.choice(node, "mode", "linear" if ctx.opset >= 20 else "bilinear", _GRID_MODES),
                        ctx.attr(node, "padding_mode", "zeros"), bool(ctx.attr(node, "align_corners", 0)))
    return ctx.network.add_layer(op, [x, ctx.input(node, 1)], ctx.name(node)).outputs


@converter("QuantizeLinear")
def quantize_linear(ctx, node):
    x, scale, zero_point = (ctx.input(node, i) for i in range(3))
    if ctx.attr(node, "block_size", 0):
        raise ctx.error(node, "blocked quantization (block_size) is not supported")
    fp8 = ctx.fp8_type(node, 2) or (ctx.attr(node, "output_dtype") if ctx.attr(node, "output_dtype") in FP8_TYPES
                                    else None)
    if fp8 is not None:
        return _quantize_to_fp8(ctx, node, x, scale, zero_point, fp8)
    if zero_point is not None:
        dtype = zero_point.dtype
    elif ctx.attr(node, "output_dtype"):
        dtype = onnx_to_datatype(ctx.attr(node, "output_dtype"), "QuantizeLinear output_dtype")
    else:
        dtype = DataType.UINT8
    op = ops.QuantizeLinear(ctx.attr(node, "axis", 1), dtype)
    return ctx.network.add_layer(op, [x, scale, zero_point], ctx.name(node)).outputs


def _quantize_to_fp8(ctx, node, x, scale, zero_point, fp8: int):
    """FP8 quantization held as float32 (tensorkiln has no FP8 type, and every FP8 value is a float32 one): x / scale
    rounded to the FP8 grid (to nearest even, saturating unless the node says saturate=0) by onnx's reference
    QuantizeLinear, whose FP8 result comes back as float32; a DequantizeLinear after it computes in float32."""
    from ....kernels.cpu.fallback import fallback_op

    if zero_point is not None and (zero_point.value is None or np.any(zero_point.value != 0)):
        raise ctx.error(node, f"its FP8 zero point ({FP8_TYPES[fp8]}) is not a constant 0; FP8 quantization takes "
                              "zero points of 0 only (re-export the model with zero points of 0)")
    reference = helper.make_node("QuantizeLinear", list(node.input[:2]), [node.output[0]], name=ctx.name(node),
                                 axis=int(ctx.attr(node, "axis", 1)), saturate=int(ctx.attr(node, "saturate", 1)),
                                 output_dtype=fp8)
    try:
        op = fallback_op(reference, _FP8_REFERENCE_OPSET, [x, scale])
    except Exception as error:  # the reference rejects the inputs (a scale of the wrong shape, ...): say so
        raise ctx.error(node, f"cannot quantize to {FP8_TYPES[fp8]} ({type(error).__name__}: {error})") from None
    output = ctx.network.add_layer(op, [x, scale], ctx.name(node)).get_output(0)
    ctx.fp8_types[node.output[0]] = fp8
    return [output]


@converter("DequantizeLinear")
def dequantize_linear(ctx, node):
    if ctx.attr(node, "block_size", 0):
        raise ctx.error(node, "blocked quantization (block_size) is not supported")
    op = ops.DequantizeLinear(ctx.attr(node, "axis", 1))
    return ctx.network.add_layer(op, [ctx.input(node, i) for i in range(3)], ctx.name(node)).outputs
