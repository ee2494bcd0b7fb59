"""InstanceNormalization, GroupNormalization, LpNormalization, MeanVarianceNormalization."""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import ReduceOperation as R
from ....ir.ops import UnaryOperation as U
from ..registry import converter


@converter("InstanceNormalization")
def instance_normalization(ctx, node):
    x = ctx.input(node, 0)
    op = ops.GroupNorm(x.shape[1], float(ctx.attr(node, "epsilon", 1e-5)))
    return ctx.network.add_layer(op, [x, ctx.input(node, 1), ctx.input(node, 2)], ctx.name(node)).outputs


@converter("GroupNormalization")
def group_normalization(ctx, node):
    x = ctx.input(node, 0)
    groups = int(ctx.required_attr(node, "num_groups"))
    if groups < 1 or x.shape[1] % groups:
        raise ctx.error(node, f"attribute num_groups = {groups} must be positive and divide the {x.shape[1]} channels")
    scale, bias = ctx.input(node, 1), ctx.input(node, 2)
    if ctx.opset < 21 and scale.shape[0] == groups and groups != x.shape[1]:
        # GroupNormalization-18 gives one scale and bias per group: repeat them for each channel
        repeat = x.shape[1] // groups
        scale, bias = (ctx.network.add_layer(ops.Shuffle(reshape_dims=(groups, 1)), [t], ctx.name(node)).get_output(0)
                       for t in (scale, bias))
        scale, bias = (ctx.network.add_layer(ops.Tile((1, repeat)), [t], ctx.name(node)).get_output(0)
                       for t in (scale, bias))
        scale, bias = (ctx.network.add_shuffle(t, reshape_dims=(-1,), name=ctx.name(node)).get_output(0)
                       for t in (scale, bias))
    op = ops.GroupNorm(groups, float(ctx.attr(node, "epsilon", 1e-5)))
    return ctx.network.add_layer(op, [x, scale, bias], ctx.name(node)).outputs


@converter("LpNormalization")
def lp_normalization(ctx, node):
    x = ctx.input(node, 0)
    norm = R.L1 if ctx.attr(node, "p", 2) == 1 else R.L2
    net, name = ctx.network, ctx.name(node)
    length = net.add_reduce(x, norm, [ctx.attr(node, "axis", -1)], True, name=name).get_output(0)
    # a zero vector stays zero (x / 0 would be NaN): divide it by 1 instead, as onnxruntime and ONNX's reference do
    zero, one = (net.add_constant((), np.array(v, dtype=x.dtype.numpy)).get_output(0) for v in (0, 1))
    is_zero = net.add_elementwise(length, zero, E.EQUAL, name=name).get_output(0)
    length = net.add_select(is_zero, one, length, name=name).get_output(0)
    return [net.add_elementwise(x, length, E.DIV, name=name).get_output(0)]


@converter("MeanVarianceNormalization")
def mean_variance_normalization(ctx, node):
    x = ctx.input(node, 0)
    axes = ctx.attr(node, "axes", [0, 2, 3])
    net, name = ctx.network, ctx.name(node)
    mean = net.add_reduce(x, R.MEAN, axes, True, name=name).get_output(0)
    centered = net.add_elementwise(x, mean, E.SUB, name=name).get_output(0)
    variance = net.add_reduce(net.add_elementwise(centered, centered, E.PROD, name=name).get_output(0), R.MEAN, axes,
                              True, name=name).get_output(0)
    epsilon = net.add_constant((), np.array(1e-9, dtype=x.dtype.numpy)).get_output(0)
    std = net.add_unary(net.add_elementwise(variance, epsilon, E.SUM, name=name).get_output(0), U.SQRT,
                        name=name).get_output(0)
    return [net.add_elementwise(centered, std, E.DIV, name=name).get_output(0)]
