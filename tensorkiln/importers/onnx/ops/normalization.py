"""BatchNormalization (inference), LayerNormalization, LRN."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import ReduceOperation as R
from ....ir.ops import ScaleMode
from ....ir.ops import UnaryOperation as U
from ..registry import converter


@converter("BatchNormalization")
def batch_normalization(ctx, node):
    if any(node.output[1:]) or ctx.attr(node, "training_mode", 0):
        raise ctx.error(node, "training-mode BatchNormalization (running statistics outputs) is not supported")
    x = ctx.input(node, 0)
    epsilon = float(ctx.attr(node, "epsilon", 1e-5))
    scale, bias, mean, var = (ctx.constant(node, i) for i in range(1, 5))
    channels = x.shape[1] if len(x.shape) > 1 else 1
    for index, value in enumerate((scale, bias, mean, var), start=1):
        shape = ctx.input(node, index).shape
        if tuple(shape) != (channels,):
            raise ctx.error(node, f"input {index} ({node.input[index]!r}) has shape {list(shape)}; it needs one value "
                                  f"per channel ([{channels}])")
    if all(v is not None for v in (scale, bias, mean, var)):
        # y = (x - mean) / sqrt(var + eps) * scale + bias  =>  per-channel scale and shift
        factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
        shift = bias - mean * factor
        # constant tensors of x's dtype: arrays given to add_scale become float32 weights (and a float32 output)
        shift, factor = (ctx.network.add_constant(None, v.astype(x.dtype.numpy)).get_output(0)
                         for v in (shift, factor))
        return [ctx.network.add_scale(x, ScaleMode.CHANNEL, shift=shift, scale=factor,
                                      name=ctx.name(node)).get_output(0)]
    return [_batch_norm_layers(ctx, node, x, epsilon)]


def _batch_norm_layers(ctx, node, x, epsilon):
    """BatchNormalization whose statistics are run-time tensors: spelled out with elementwise layers."""
    net, name = ctx.network, ctx.name(node)
    per_channel = (-1,) + (1,) * (len(x.shape) - 2)
    scale, bias, mean, var = (net.add_shuffle(ctx.input(node, i), reshape_dims=per_channel, name=name).get_output(0)
                              for i in range(1, 5))
    eps = net.add_constant((), np.array(epsilon, dtype=x.dtype.numpy)).get_output(0)
    std = net.add_unary(net.add_elementwise(var, eps, E.SUM, name=name).get_output(0), U.SQRT, name=name).get_output(0)
    centered = net.add_elementwise(x, mean, E.SUB, name=name).get_output(0)
    normalized = net.add_elementwise(centered, std, E.DIV, name=name).get_output(0)
    scaled = net.add_elementwise(normalized, scale, E.PROD, name=name).get_output(0)
    return net.add_elementwise(scaled, bias, E.SUM, name=name).get_output(0)


@converter("LayerNormalization")
def layer_normalization(ctx, node):
    if any(node.output[1:]):
        return _layer_norm_with_statistics(ctx, node)
    layer = ctx.network.add_layer_norm(ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2),
                                       ctx.attr(node, "axis", -1), ctx.attr(node, "epsilon", 1e-5), ctx.name(node))
    return [layer.get_output(0)]


@converter("LRN")
def lrn(ctx, node):
    layer = ctx.network.add_lrn(ctx.input(node, 0), ctx.attr(node, "size"), ctx.attr(node, "alpha", 1e-4),
                                ctx.attr(node, "beta", 0.75), ctx.attr(node, "bias", 1.0), ctx.name(node))
    return [layer.get_output(0)]


def _layer_norm_with_statistics(ctx, node):
    """LayerNormalization whose Mean and InvStdDev outputs are used: spelled out with reductions."""
    net, name = ctx.network, ctx.name(node)
    x, scale, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    axes = list(range(ctx.attr(node, "axis", -1) % len(x.shape), len(x.shape)))
    mean = net.add_reduce(x, R.MEAN, axes, True, name=name).get_output(0)
    centered = net.add_elementwise(x, mean, E.SUB, name=name).get_output(0)
    squares = net.add_elementwise(centered, centered, E.PROD, name=name).get_output(0)
    variance = net.add_reduce(squares, R.MEAN, axes, True, name=name).get_output(0)
    epsilon = net.add_constant((), np.array(ctx.attr(node, "epsilon", 1e-5), dtype=x.dtype.numpy)).get_output(0)
    shifted = net.add_elementwise(variance, epsilon, E.SUM, name=name).get_output(0)
    inverse = net.add_unary(net.add_unary(shifted, U.SQRT, name=name).get_output(0), U.RECIP, name=name).get_output(0)
    y = net.add_elementwise(net.add_elementwise(centered, inverse, E.PROD, name=name).get_output(0), scale, E.PROD,
                            name=name).get_output(0)
    if bias is not None:
        y = net.add_elementwise(y, bias, E.SUM, name=name).get_output(0)
    return [y, mean, inverse]
