"""Activations and the normalizations of the last axis: SOFTMAX, LOG_SOFTMAX, L2_NORMALIZATION."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ActivationType as A
from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import ReduceOperation as R
from ....ir.ops import UnaryOperation as U
from ..registry import converter

# op name -> (activation, alpha, beta)
ACTIVATIONS = {
    "RELU": (A.RELU, 0.0, 0.0), "RELU6": (A.CLIP, 0.0, 6.0), "RELU_N1_TO_1": (A.CLIP, -1.0, 1.0),
    "RELU_0_TO_1": (A.CLIP, 0.0, 1.0), "LOGISTIC": (A.SIGMOID, 0.0, 0.0), "TANH": (A.TANH, 0.0, 0.0),
    "HARD_SWISH": (A.HARD_SWISH, 0.0, 0.0), "ELU": (A.ELU, 1.0, 0.0),
}


def activation(ctx, x, kind, alpha=0.0, beta=0.0):
    return ctx.network.add_activation(x, kind, alpha, beta, name=ctx.name).get_output(0)


@converter(*ACTIVATIONS)
def activation_op(ctx, op):
    return [activation(ctx, ctx.input(0), *ACTIVATIONS[op.op_name])]


@converter("LEAKY_RELU")
def leaky_relu(ctx, op):
    return [activation(ctx, ctx.input(0), A.LEAKY_RELU, ctx.option("Alpha", 0.2))]


@converter("GELU")
def gelu(ctx, op):
    return [activation(ctx, ctx.input(0), A.GELU_TANH if ctx.option("Approximate", False) else A.GELU_ERF)]


@converter("PRELU")
def prelu(ctx, op):
    # the slope broadcasts against the NHWC input as stored: no layout change needed
    return [ctx.network.add_parametric_relu(ctx.input(0), ctx.input(1), name=ctx.name).get_output(0)]


@converter("SOFTMAX")
def softmax(ctx, op):
    x, beta = ctx.input(0), float(ctx.option("Beta", 1.0))
    if beta != 1.0:
        x = ctx.network.add_elementwise(x, _scalar(ctx, beta), E.PROD, name=ctx.name).get_output(0)
    return [ctx.network.add_softmax(x, axis=-1, name=ctx.name).get_output(0)]


@converter("LOG_SOFTMAX")
def log_softmax(ctx, op):
    return [ctx.network.add_softmax(ctx.input(0), axis=-1, log=True, name=ctx.name).get_output(0)]


@converter("L2_NORMALIZATION")
def l2_normalization(ctx, op):
    # x / sqrt(max(sum(x^2), epsilon)) over the last axis, TFLite's epsilon 1e-6
    net, x = ctx.network, ctx.input(0)
    squares = net.add_elementwise(x, x, E.PROD, name=ctx.name).get_output(0)
    total = net.add_reduce(squares, R.SUM, (len(x.shape) - 1,), keep_dims=True, name=ctx.name).get_output(0)
    total = net.add_elementwise(total, _scalar(ctx, 1e-6), E.MAX, name=ctx.name).get_output(0)
    norm = net.add_unary(total, U.SQRT, name=ctx.name).get_output(0)
    return [ctx.fused_activation(net.add_elementwise(x, norm, E.DIV, name=ctx.name).get_output(0))]


@converter("LOCAL_RESPONSE_NORMALIZATION")
def local_response_normalization(ctx, op):
    # TFLite: x / (bias + alpha * sum of squares over [c - radius, c + radius]) ** beta; the IR's LRN (ONNX's)
    # divides alpha by the window size, so it gets alpha * size
    radius = int(ctx.option("Radius", 5))
    size = 2 * radius + 1
    y = ctx.network.add_lrn(ctx.to_nchw(ctx.input(0)), size, float(ctx.option("Alpha", 1.0)) * size,
                            float(ctx.option("Beta", 0.5)), float(ctx.option("Bias", 1.0)), name=ctx.name)
    return [ctx.to_nhwc(y.get_output(0))]


def _scalar(ctx, value: float):
    return ctx.network.add_constant(None, np.asarray(value, np.float32), name=ctx.name + ".scalar").get_output(0)
