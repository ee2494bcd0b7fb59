"""Pointwise layers: ReLU (negative slope), PReLU, Sigmoid, TanH, ELU, AbsVal, BNLL, Power, Dropout."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ActivationType, ScaleMode, UnaryOperation
from ..registry import caffe_converter


@caffe_converter("ReLU")
def relu(ctx, layer):
    x, slope = ctx.input(layer), layer.relu_param.negative_slope
    if slope:
        return [ctx.network.add_activation(x, ActivationType.LEAKY_RELU, slope, name=layer.name).get_output(0)]
    return [ctx.network.add_activation(x, ActivationType.RELU, name=layer.name).get_output(0)]


@caffe_converter("PReLU")
def prelu(ctx, layer):
    x = ctx.input(layer)
    if len(x.shape) < 2:
        raise ctx.error(layer, f"needs a channel axis; got shape {x.shape}")
    if layer.prelu_param.channel_shared:
        slopes = ctx.blob(layer, 0, (1,), "slope")
    else:  # one slope per channel, broadcast over the dims after the channel
        slopes = ctx.blob(layer, 0, (x.shape[1],), "slopes").reshape((x.shape[1],) + (1,) * (len(x.shape) - 2))
    return [ctx.network.add_parametric_relu(x, slopes, name=layer.name).get_output(0)]


@caffe_converter("Sigmoid", "TanH", "ELU")
def activation(ctx, layer):
    from ..caffemodel import layer_type_name

    kind = layer_type_name(layer)
    x = ctx.input(layer)
    if kind == "ELU":
        return [ctx.network.add_activation(x, ActivationType.ELU, layer.elu_param.alpha, name=layer.name)
                .get_output(0)]
    activation_type = ActivationType.SIGMOID if kind == "Sigmoid" else ActivationType.TANH
    return [ctx.network.add_activation(x, activation_type, name=layer.name).get_output(0)]


@caffe_converter("AbsVal")
def absval(ctx, layer):
    return [ctx.network.add_unary(ctx.input(layer), UnaryOperation.ABS, name=layer.name).get_output(0)]


@caffe_converter("BNLL")
def bnll(ctx, layer):  # log(1 + exp(x))
    return [ctx.network.add_activation(ctx.input(layer), ActivationType.SOFTPLUS, name=layer.name).get_output(0)]


@caffe_converter("Power")
def power(ctx, layer):
    """(shift + scale * x) ** power."""
    p = layer.power_param

    def scalar(value):
        return np.asarray([value], dtype=np.float32)

    exponent = None if p.power == 1.0 else scalar(p.power)
    return [ctx.network.add_scale(ctx.input(layer), ScaleMode.UNIFORM, shift=scalar(p.shift), scale=scalar(p.scale),
                                  power=exponent, name=layer.name).get_output(0)]


@caffe_converter("Dropout")
def dropout(ctx, layer):
    """Identity at inference (Caffe scales during training, so the test-time net passes values through)."""
    return [ctx.input(layer)]
