"""CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, BATCH_MATMUL.

TFLite keeps activations in NHWC and filters as [out, kh, kw, in] (depthwise: [1, kh, kw, in * multiplier]);
the convolutions transpose the activation to NCHW and back around the layer and the filter once, at import."""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ....ir.ops import ElementWiseOperation as E
from ..registry import converter
from .hybrid import is_hybrid, snap_input


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one spatial dim: the output is ceil(size / stride); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def spatial_pads(ctx, height: int, width: int, kernel: tuple[int, int], stride, dilation) -> tuple[int, ...]:
    """Pads (top, left, bottom, right) for the operator's Padding option (0: SAME, 1: VALID)."""
    if ctx.option("Padding", 1) == 1:
        return (0, 0, 0, 0)
    top, bottom = same_padding(height, kernel[0], stride[0], dilation[0])
    left, right = same_padding(width, kernel[1], stride[1], dilation[1])
    return (top, left, bottom, right)


def _filter_nchw(ctx, position: int, permutation) -> object:
    """The filter, transposed to the IR's layout: a constant at import, else a transpose layer."""
    value = ctx.value(position)
    if value is not None:
        return np.ascontiguousarray(np.asarray(value, dtype=np.float32).transpose(permutation))
    return ctx.transpose(ctx.input(position), permutation)


def _bias(ctx, position: int):
    return ctx.input(position) if ctx.has_input(position) else None


@converter("CONV_2D")
def conv_2d(ctx, op):
    x = ctx.input(0)
    out_channels, kh, kw, in_channels = ctx.input_record(1).shape
    groups = x.shape[3] // in_channels  # grouped convolutions store in / groups filter channels
    stride = (ctx.option("StrideH", 1), ctx.option("StrideW", 1))
    dilation = (ctx.option("DilationHFactor", 1), ctx.option("DilationWFactor", 1))
    pads = spatial_pads(ctx, x.shape[1], x.shape[2], (kh, kw), stride, dilation)
    if is_hybrid(ctx, 0, 1):
        # TFLite's CPU delegate (XNNPACK) quantizes the input asymmetrically: per pixel where the convolution is a
        # matrix product (1x1, stride 1), per image otherwise
        pointwise = (kh, kw) == (1, 1) and stride == (1, 1)
        x = snap_input(ctx, x, symmetric=False, batch_rank=3 if pointwise else 1)
    return [_convolve(ctx, x, _filter_nchw(ctx, 1, (0, 3, 1, 2)), _bias(ctx, 2), stride, pads, dilation, groups)]


@converter("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx, op):
    x = ctx.input(0)
    _, kh, kw, out_channels = ctx.input_record(1).shape
    channels = x.shape[3]
    stride = (ctx.option("StrideH", 1), ctx.option("StrideW", 1))
    dilation = (ctx.option("DilationHFactor", 1), ctx.option("DilationWFactor", 1))
    pads = spatial_pads(ctx, x.shape[1], x.shape[2], (kh, kw), stride, dilation)
    if is_hybrid(ctx, 0, 1):  # TFLite's hybrid depthwise kernel: asymmetric, one scale per image
        x = snap_input(ctx, x, symmetric=False)
    # output channel c * multiplier + m reads input channel c: groups of `multiplier` filters, one per channel
    weights = _filter_nchw(ctx, 1, (3, 0, 1, 2))  # [out, 1, kh, kw]
    return [_convolve(ctx, x, weights, _bias(ctx, 2), stride, pads, dilation, channels)]


def _convolve(ctx, x, weights, bias, stride, pads, dilation, groups):
    net = ctx.network
    weights = net.weights(weights, ctx.name + ".weight")
    layer = net.add_layer(ops.Convolution(tuple(stride), (pads[0], pads[1], pads[2], pads[3]), tuple(dilation),
                                          int(groups)), [ctx.to_nchw(x), weights, bias], ctx.name)
    return ctx.to_nhwc(ctx.fused_activation(layer.get_output(0)))


@converter("TRANSPOSE_CONV")
def transpose_conv(ctx, op):
    # inputs: output_shape, filter [out, kh, kw, in], x, optional bias
    x = ctx.input(2)
    out_shape = ctx.ints(0, "output shape")
    out_channels, kh, kw, _ = ctx.input_record(1).shape
    stride = (ctx.option("StrideH", 1), ctx.option("StrideW", 1))
    pads = []
    for size, out, k, s in zip(x.shape[1:3], out_shape[1:3], (kh, kw), stride):
        total = (size - 1) * s + k - out  # the full transposed output, cropped to the requested size
        pads.append((total // 2, total - total // 2))
    begin, end = [p[0] for p in pads], [p[1] for p in pads]
    output_padding = [max(-e, 0) for e in end]  # a requested size beyond the full output is zero-filled
    end = [max(e, 0) for e in end]
    weights = ctx.network.weights(_filter_nchw(ctx, 1, (3, 0, 1, 2)), ctx.name + ".weight")  # [in, out, kh, kw]
    op_attrs = ops.Deconvolution(tuple(stride), (*begin, *end), (1, 1), tuple(output_padding), 1)
    layer = ctx.network.add_layer(op_attrs, [ctx.to_nchw(x), weights, _bias(ctx, 3)], ctx.name)
    return [ctx.to_nhwc(ctx.fused_activation(layer.get_output(0)))]


@converter("FULLY_CONNECTED")
def fully_connected(ctx, op):
    net, x = ctx.network, ctx.input(0)
    units, depth = ctx.input_record(1).shape
    flat = ctx.reshape(x, (-1, depth)) if x.shape != (x.shape[0], depth) or len(x.shape) != 2 else x
    if is_hybrid(ctx, 0, 1):  # one scale per row of the flattened input
        flat = snap_input(ctx, flat, symmetric=not ctx.option("AsymmetricQuantizeInputs", False))
    weights = ctx.value(1)
    if weights is not None:
        y = net.add_fully_connected(flat, units, weights, None, name=ctx.name).get_output(0)
    else:  # weights computed at run time: a matrix product with the transposed weights
        y = net.add_matrix_multiply(flat, ctx.input(1), transpose1=True, name=ctx.name).get_output(0)
    if ctx.has_input(2):
        y = net.add_elementwise(y, ctx.input(2), E.SUM, name=ctx.name).get_output(0)
    y = ctx.fused_activation(y)
    target = ctx.output_record().shape
    if tuple(y.shape) != tuple(target):
        keep = ctx.option("KeepNumDims", False)
        y = ctx.reshape(y, (*x.shape[:-1], units) if keep else target)
    return [y]


@converter("BATCH_MATMUL")
def batch_matmul(ctx, op):
    a, b = ctx.input(0), ctx.input(1)
    return [ctx.network.add_matrix_multiply(a, b, bool(ctx.option("AdjX", False)), bool(ctx.option("AdjY", False)),
                                            name=ctx.name).get_output(0)]
