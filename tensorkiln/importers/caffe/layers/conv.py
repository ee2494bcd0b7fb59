"""Convolution, Deconvolution and InnerProduct."""
from __future__ import annotations

from ...window_checks import first_problem, group_problem, least_problem
from ..registry import caffe_converter


def spatial_params(ctx, layer, param, rank: int) -> tuple[tuple[int, ...], ...]:
    """(kernel, stride, pad, dilation) of a ConvolutionParameter over `rank` spatial dims: a repeated field
    holds one value for all dims or one per dim; the _h/_w fields (2-d only) override it."""

    fields: dict[str, str] = {}  # what -> the field(s) the value came from, as the prototxt spells them

    def dims(values, default: int, h: str | None, w: str | None, what: str) -> tuple[int, ...]:
        fields[what] = what
        if h is not None and (param.HasField(h) or param.HasField(w)):
            if rank != 2:
                raise ctx.error(layer, f"{h}/{w} are for 2-d convolutions; the input has {rank} spatial dims")
            fields[what] = f"{h}/{w}"
            return int(getattr(param, h)), int(getattr(param, w))
        values = [int(v) for v in values] or [default]
        if len(values) == 1:
            return tuple(values) * rank
        if len(values) != rank:
            raise ctx.error(layer, f"{what} has {len(values)} values for {rank} spatial dims")
        return tuple(values)

    kernel = dims(param.kernel_size, 0, "kernel_h", "kernel_w", "kernel_size")
    if 0 in kernel:
        raise ctx.error(layer, "has no kernel size (kernel_size, or kernel_h and kernel_w)")
    stride = dims(param.stride, 1, "stride_h", "stride_w", "stride")
    pad = dims(param.pad, 0, "pad_h", "pad_w", "pad")
    dilation = dims(param.dilation, 1, None, None, "dilation")
    problem = first_problem(least_problem(fields["stride"], stride, 1), least_problem("dilation", dilation, 1))
    if problem:  # (a kernel of 0 is refused above; Caffe's fields are unsigned, so pads cannot be negative)
        raise ctx.error(layer, problem)
    return kernel, stride, pad, dilation


def _groups(ctx, layer, param, channels: int) -> tuple[int, int]:
    """(group, num_output), checked: a positive group that divides the input channels and the outputs."""
    problem = group_problem("group", param.group, channels, param.num_output)
    if problem:
        raise ctx.error(layer, problem)
    return param.group, param.num_output


def _weights(ctx, layer, kernel_shape, num_output: int, bias_term: bool):
    kernel = ctx.blob(layer, 0, kernel_shape, "kernel")
    bias = ctx.blob(layer, 1, (num_output,), "bias") if bias_term else None
    return kernel, bias


def _spatial_input(ctx, layer):
    """The bottom of a convolution: (N, C, and at least one spatial dimension)."""
    x = ctx.input(layer)
    if len(x.shape) < 3:
        raise ctx.error(layer, f"convolves blobs of shape (N, C, H, ...); its bottom has shape {list(x.shape)}")
    return x


@caffe_converter("Convolution")
def convolution(ctx, layer):
    x, param = _spatial_input(ctx, layer), layer.convolution_param
    if param.axis not in (1, -len(x.shape) + 1):
        raise ctx.error(layer, f"convolves with channel axis {param.axis}; only axis 1 (NCHW) is supported")
    kernel, stride, pad, dilation = spatial_params(ctx, layer, param, len(x.shape) - 2)
    groups, maps = _groups(ctx, layer, param, x.shape[1])
    weights, bias = _weights(ctx, layer, (maps, x.shape[1] // groups, *kernel), maps, param.bias_term)
    return [ctx.network.add_convolution(x, maps, kernel, weights, bias, stride, pad, dilation, groups,
                                        name=layer.name).get_output(0)]


@caffe_converter("Deconvolution")
def deconvolution(ctx, layer):
    x, param = _spatial_input(ctx, layer), layer.convolution_param
    kernel, stride, pad, dilation = spatial_params(ctx, layer, param, len(x.shape) - 2)
    groups, maps = _groups(ctx, layer, param, x.shape[1])
    weights, bias = _weights(ctx, layer, (x.shape[1], maps // groups, *kernel), maps, param.bias_term)
    return [ctx.network.add_deconvolution(x, maps, kernel, weights, bias, stride, pad, dilation, groups,
                                          name=layer.name).get_output(0)]


@caffe_converter("InnerProduct")
def inner_product(ctx, layer):
    x, param = ctx.input(layer), layer.inner_product_param
    axis = param.axis % len(x.shape)
    inputs = 1
    for d in x.shape[axis:]:
        inputs *= d
    outputs = param.num_output
    if param.transpose:  # weights stored [inputs, outputs]
        weights = ctx.blob(layer, 0, (inputs, outputs), "weights").T
    else:
        weights = ctx.blob(layer, 0, (outputs, inputs), "weights")
    bias = ctx.blob(layer, 1, (outputs,), "bias") if param.bias_term else None
    return [ctx.network.add_fully_connected(x, outputs, weights, bias, axis=axis, name=layer.name).get_output(0)]
