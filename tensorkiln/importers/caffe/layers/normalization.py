"""BatchNorm (with its moving-average scale factor blob), Scale and Bias."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ElementWiseOperation, ScaleMode
from ..registry import caffe_converter


@caffe_converter("BatchNorm")
def batch_norm(ctx, layer):
    """(x - mean / s) / sqrt(var / s + eps) per channel, where s is the third blob (the sum of the moving
    average weights; Caffe stores unnormalized running sums, and s == 0 means "no statistics": use 0)."""
    x, param = ctx.input(layer), layer.batch_norm_param
    if param.HasField("use_global_stats") and not param.use_global_stats:
        raise ctx.error(layer, "has use_global_stats: false (batch statistics, a training setting); an inference "
                               "net normalizes with the stored statistics: remove the field")
    channels = x.shape[1]
    mean = ctx.blob(layer, 0, (channels,), "mean").astype(np.float64)
    variance = ctx.blob(layer, 1, (channels,), "variance").astype(np.float64)
    factor = float(ctx.blob(layer, 2, (1,), "moving average factor")[0]) if ctx.blob_count(layer) > 2 else 1.0
    normalizer = 0.0 if factor == 0 else 1.0 / factor
    scale = 1.0 / np.sqrt(variance * normalizer + param.eps)
    shift = -mean * normalizer * scale
    return [ctx.network.add_scale(x, ScaleMode.CHANNEL, shift=shift.astype(np.float32),
                                  scale=scale.astype(np.float32), name=layer.name).get_output(0)]


def _coefficient_shape(ctx, layer, x, axis: int, num_axes: int) -> tuple[int, ...]:
    axis %= len(x.shape)
    end = len(x.shape) if num_axes == -1 else axis + num_axes
    if end > len(x.shape):
        raise ctx.error(layer, f"axis {axis} and num_axes {num_axes} go past the input's {len(x.shape)} dims")
    return tuple(x.shape[axis:end])


def _apply(ctx, layer, x, axis: int, shape, scale, shift):
    """x * scale + shift with coefficients of `shape` laid over the dims of x from `axis` on."""
    net, axis = ctx.network, axis % len(x.shape)
    if len(shape) == 1:
        return net.add_scale(x, ScaleMode.CHANNEL, shift=shift, scale=scale, channel_axis=axis, name=layer.name)
    if len(shape) == 0:
        return net.add_scale(x, ScaleMode.UNIFORM, shift=shift, scale=scale, name=layer.name)
    broadcast = tuple(shape) + (1,) * (len(x.shape) - axis - len(shape))
    y = x
    if scale is not None:
        y = net.add_elementwise(y, net.weights(scale.reshape(broadcast), layer.name + ".scale"),
                                ElementWiseOperation.PROD, name=layer.name if shift is None else None).get_output(0)
    if shift is not None:
        return net.add_elementwise(y, net.weights(shift.reshape(broadcast), layer.name + ".bias"),
                                   ElementWiseOperation.SUM, name=layer.name)
    return y.producer


@caffe_converter("Scale")
def scale(ctx, layer):
    x, param = ctx.input(layer), layer.scale_param
    if len(layer.bottom) > 1:  # the scale is the second bottom, laid over x from `axis`
        factor = ctx.input(layer, 1)
        axis = param.axis % len(x.shape)
        broadcast = tuple(factor.shape) + (1,) * (len(x.shape) - axis - len(factor.shape))
        factor = ctx.network.add_shuffle(factor, reshape_dims=broadcast, name=f"{layer.name}/broadcast").get_output(0)
        y = ctx.network.add_elementwise(x, factor, ElementWiseOperation.PROD, name=layer.name).get_output(0)
        if param.bias_term:
            shape = tuple(ctx.input(layer, 1).shape)
            y = _apply(ctx, layer, y, axis, shape, None, ctx.blob(layer, 0, shape, "bias")).get_output(0)
        return [y]
    shape = _coefficient_shape(ctx, layer, x, param.axis, param.num_axes)
    factor = ctx.blob(layer, 0, shape, "scale")
    bias = ctx.blob(layer, 1, shape, "bias") if param.bias_term else None
    return [_apply(ctx, layer, x, param.axis, shape, factor, bias).get_output(0)]


@caffe_converter("Bias")
def bias(ctx, layer):
    x, param = ctx.input(layer), layer.bias_param
    if len(layer.bottom) > 1:
        raise ctx.error(layer, "takes its bias from a second bottom, which is not supported; store it as a blob")
    shape = _coefficient_shape(ctx, layer, x, param.axis, param.num_axes)
    return [_apply(ctx, layer, x, param.axis, shape, None, ctx.blob(layer, 0, shape, "bias")).get_output(0)]
