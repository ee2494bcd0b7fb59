"""onnxruntime's quantized operators (domain com.microsoft) as quantize_static (QOperator format) and its graph
optimizer write them: QLinearAdd, QLinearMul, QLinearConcat, QLinearSoftmax, QLinearAveragePool,
QLinearGlobalAveragePool, QLinearSigmoid, QLinearLeakyRelu, QGemm, DynamicQuantizeMatMul and DynamicQuantizeLSTM.

Each becomes dequantize -> the float operation -> quantize (simulated INT8: the layers an integer kernel's result
rounds to). onnxruntime computes some of them in fixed point or through lookup tables; the results agree to within
one quantization step.
"""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ....ir.dtypes import DataType
from ....ir.ops import ActivationType as A
from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import PoolingType
from ..registry import converter
from .conv import spatial_attrs
from .recurrent import activations as recurrent_activations

MICROSOFT = "com.microsoft"


def _dequantize(ctx, node, index: int, axis: int = 1):
    """The float value of the quantized input triple at `index` (value, scale, zero point)."""
    x, scale, zero_point = (ctx.input(node, index + i) for i in range(3))
    op = ops.DequantizeLinear(axis)
    return ctx.network.add_layer(op, [x, scale, zero_point], ctx.name(node)).get_output(0)


def _quantize(ctx, node, y, scale_index: int):
    """y quantized with the scale and zero point at inputs `scale_index`, `scale_index + 1` (uint8 where the zero
    point is absent, as ONNX's QuantizeLinear)."""
    scale, zero_point = ctx.input(node, scale_index), ctx.input(node, scale_index + 1)
    dtype = zero_point.dtype if zero_point is not None else DataType.UINT8
    return ctx.network.add_layer(ops.QuantizeLinear(1, dtype), [y, scale, zero_point], ctx.name(node)).get_output(0)


def _to_channels_first(ctx, node, x, channels_last: bool):
    if not channels_last:
        return x
    rank = len(x.shape)
    return ctx.network.add_shuffle(x, (0, rank - 1, *range(1, rank - 1)), name=ctx.name(node)).get_output(0)


def _from_channels_first(ctx, node, y, channels_last: bool):
    if not channels_last:
        return y
    rank = len(y.shape)
    return ctx.network.add_shuffle(y, (0, *range(2, rank), 1), name=ctx.name(node)).get_output(0)


@converter("QLinearAdd", "QLinearMul", domain=MICROSOFT)
def qlinear_binary(ctx, node):
    """inputs: A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point."""
    a, b = _dequantize(ctx, node, 0), _dequantize(ctx, node, 3)
    operation = E.SUM if node.op_type == "QLinearAdd" else E.PROD
    return [_quantize(ctx, node, ctx.network.add_elementwise(a, b, operation, name=ctx.name(node)).get_output(0), 6)]


@converter("QLinearConcat", domain=MICROSOFT)
def qlinear_concat(ctx, node):
    """inputs: Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per concatenated tensor."""
    parts = [_dequantize(ctx, node, index) for index in range(2, len(node.input), 3)]
    joined = ctx.network.add_concatenation(parts, int(ctx.attr(node, "axis")), name=ctx.name(node)).get_output(0)
    return [_quantize(ctx, node, joined, 0)]


@converter("QLinearSigmoid", "QLinearLeakyRelu", domain=MICROSOFT)
def qlinear_activation(ctx, node):
    """inputs: X, X_scale, X_zero_point, Y_scale, Y_zero_point."""
    x = _dequantize(ctx, node, 0)
    if node.op_type == "QLinearSigmoid":
        y = ctx.network.add_activation(x, A.SIGMOID, name=ctx.name(node))
    else:
        y = ctx.network.add_activation(x, A.LEAKY_RELU, float(ctx.attr(node, "alpha", 0.01)), name=ctx.name(node))
    return [_quantize(ctx, node, y.get_output(0), 3)]


@converter("QLinearSoftmax", domain=MICROSOFT)
def qlinear_softmax(ctx, node):
    """inputs: X, X_scale, X_zero_point, Y_scale, Y_zero_point; `opset` says which ONNX Softmax it follows."""
    x = _dequantize(ctx, node, 0)
    if int(ctx.attr(node, "opset", 13)) >= 13:
        y = ctx.network.add_softmax(x, int(ctx.attr(node, "axis", -1)), name=ctx.name(node)).get_output(0)
    else:  # before opset 13: coerced to 2D at `axis`, normalized over the whole second part
        axis = int(ctx.attr(node, "axis", 1)) % max(len(x.shape), 1)
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        flat = ctx.network.add_shuffle(x, reshape_dims=(rows, -1), name=ctx.name(node)).get_output(0)
        normalized = ctx.network.add_softmax(flat, 1, name=ctx.name(node)).get_output(0)
        y = ctx.network.add_shuffle(normalized, reshape_dims=x.shape, name=ctx.name(node)).get_output(0)
    return [_quantize(ctx, node, y, 3)]


@converter("QLinearAveragePool", domain=MICROSOFT)
def qlinear_average_pool(ctx, node):
    """inputs: X, x_scale, x_zero_point, y_scale, y_zero_point; AveragePool's attributes, and channels_last."""
    channels_last = bool(ctx.attr(node, "channels_last", 0))
    x = _to_channels_first(ctx, node, _dequantize(ctx, node, 0), channels_last)
    kernel = ctx.attr(node, "kernel_shape")
    if kernel is None:
        raise ctx.error(node, "has no kernel_shape attribute, which it requires; fix the model")
    stride, dilation, pads = spatial_attrs(ctx, node, x, kernel)
    op = ops.Pooling(PoolingType.AVERAGE, kernel, stride, pads, dilation, bool(ctx.attr(node, "ceil_mode", 0)),
                     bool(ctx.attr(node, "count_include_pad", 0)))
    y = ctx.network.add_layer(op, [x], ctx.name(node)).get_output(0)
    return [_quantize(ctx, node, _from_channels_first(ctx, node, y, channels_last), 3)]


@converter("QLinearGlobalAveragePool", domain=MICROSOFT)
def qlinear_global_average_pool(ctx, node):
    """inputs: X, x_scale, x_zero_point, y_scale, y_zero_point; channels_last."""
    channels_last = bool(ctx.attr(node, "channels_last", 0))
    x = _to_channels_first(ctx, node, _dequantize(ctx, node, 0), channels_last)
    y = ctx.network.add_global_pooling(x, PoolingType.AVERAGE, name=ctx.name(node)).get_output(0)
    return [_quantize(ctx, node, _from_channels_first(ctx, node, y, channels_last), 3)]


@converter("QGemm", domain=MICROSOFT)
def qgemm(ctx, node):
    """inputs: A, a_scale, a_zero_point, B, b_scale, b_zero_point, C (int32 bias at scale a_scale * b_scale),
    y_scale, y_zero_point (absent: a float output); alpha, transA, transB."""
    trans_a, trans_b = bool(ctx.attr(node, "transA", 0)), bool(ctx.attr(node, "transB", 0))
    b_scale = ctx.input(node, 4)
    per_column = b_scale.numel > 1
    a = _dequantize(ctx, node, 0)
    b = _dequantize(ctx, node, 3, axis=0 if trans_b else 1)  # b's scales are per output column where there are many
    net = ctx.network
    y = net.add_matrix_multiply(a, b, trans_a, trans_b, name=ctx.name(node)).get_output(0)
    if ctx.input(node, 6) is not None:
        bias, a_scale = ctx.input(node, 6), ctx.require_constant(node, 1, "a_scale")
        scales = a_scale.astype(np.float32) * ctx.require_constant(node, 4, "b_scale").astype(np.float32)
        if bias.is_constant:
            value = (bias.value.astype(np.float64) * scales.reshape(-1 if per_column else ())).astype(np.float32)
            bias = net.add_constant(value.shape, value, name=ctx.name(node)).get_output(0)
        else:  # an int32 bias computed at run time: cast, then scale
            bias = net.add_cast(bias, DataType.FLOAT, name=ctx.name(node)).get_output(0)
            factor = net.add_constant(scales.shape, scales, name=ctx.name(node)).get_output(0)
            bias = net.add_elementwise(bias, factor, E.PROD, name=ctx.name(node)).get_output(0)
        y = net.add_elementwise(y, bias, E.SUM, name=ctx.name(node)).get_output(0)
    # alpha scales the whole int32 accumulation, bias included, as onnxruntime's QGemm does
    alpha = float(ctx.attr(node, "alpha", 1.0))
    if alpha != 1.0:
        factor = net.add_constant((), np.array(alpha, np.float32), name=ctx.name(node)).get_output(0)
        y = net.add_elementwise(y, factor, E.PROD, name=ctx.name(node)).get_output(0)
    return [y if ctx.input(node, 7) is None else _quantize(ctx, node, y, 7)]


@converter("DynamicQuantizeMatMul", domain=MICROSOFT)
def dynamic_quantize_matmul(ctx, node):
    """inputs: A (float), B (8-bit), b_scale, b_zero_point, bias (float); A is quantized to uint8 over its own range
    at run time (DynamicQuantizeLinear), B's scales are per tensor or per output column."""
    net, name = ctx.network, ctx.name(node)
    quantized = net.add_layer(ops.DynamicQuantizeLinear(), [ctx.input(node, 0)], name).outputs
    a = net.add_layer(ops.DequantizeLinear(1), list(quantized), name).get_output(0)
    b = ctx.input(node, 1)
    b = net.add_layer(ops.DequantizeLinear(len(b.shape) - 1), [b, ctx.input(node, 2), ctx.input(node, 3)],
                      name).get_output(0)
    y = net.add_matrix_multiply(a, b, name=name).get_output(0)
    bias = ctx.input(node, 4)
    return [y if bias is None else net.add_elementwise(y, bias, E.SUM, name=name).get_output(0)]


def _dequantized_gates(ctx, node, index: int, scale_index: int, what: str) -> np.ndarray:
    """An 8-bit [directions, rows, 4 * hidden] matrix of DynamicQuantizeLSTM (its values at input `index`, its scales
    and zero points at `scale_index` and the next, per direction or per gate column), in float and in ONNX LSTM's
    layout [directions, 4 * hidden, rows]."""
    values = ctx.require_constant(node, index, what).astype(np.float64)
    scale = ctx.require_constant(node, scale_index, f"{what} scale").astype(np.float64)
    zero_point = ctx.require_constant(node, scale_index + 1, f"{what} zero point").astype(np.float64)
    columns = (values.shape[0], 1, -1)  # [directions] or [directions, 4 * hidden] broadcast over the rows
    dequantized = (values - zero_point.reshape(columns)) * scale.reshape(columns)
    return np.ascontiguousarray(dequantized.transpose(0, 2, 1)).astype(np.float32)


@converter("DynamicQuantizeLSTM", domain=MICROSOFT)
def dynamic_quantize_lstm(ctx, node):
    """inputs: X, W, R (8-bit, [directions, input or hidden, 4 * hidden]), B, sequence_lens, initial_h, initial_c,
    P, W_scale, W_zero_point, R_scale, R_zero_point. An ONNX LSTM with the weights dequantized: onnxruntime also
    quantizes X and the hidden state at run time, which this leaves in float (its error is that of 8-bit
    activations)."""
    net, name = ctx.network, ctx.name(node)
    weights = [net.add_constant(None, _dequantized_gates(ctx, node, index, scale_index, what), name=name).get_output(0)
               for index, scale_index, what in ((1, 8, "W"), (2, 10, "R"))]
    hidden_size = int(ctx.attr(node, "hidden_size", weights[1].shape[-1]))
    op = ops.Recurrent(
        "lstm", hidden_size, ctx.attr(node, "direction", "forward"), recurrent_activations(ctx, node),
        tuple(float(v) for v in ctx.attr(node, "activation_alpha", [])),
        tuple(float(v) for v in ctx.attr(node, "activation_beta", [])), float(ctx.attr(node, "clip", 0.0) or 0.0),
        False, bool(ctx.attr(node, "input_forget", 0)))
    inputs = [ctx.input(node, 0), *weights, *(ctx.input(node, i) for i in range(3, 8))]
    outputs = net.add_layer(op, inputs, name).outputs
    return outputs[: max(1, len(node.output))]
