"""Pooling (MAX/AVE, global, Caffe's rounding) and LRN (across and within channels)."""
from __future__ import annotations

from ....ir.ops import ElementWiseOperation, PoolingType, ScaleMode
from ..schema import caffe_pb2
from ..registry import caffe_converter

_POOL = caffe_pb2.PoolingParameter
_LRN = caffe_pb2.LRNParameter


def _pooling_window(ctx, layer, param, spatial_shape) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, pad) as (h, w) pairs; a global pooling window covers the whole map."""
    if param.global_pooling:
        if param.pad or param.pad_h or param.pad_w or (param.HasField("stride") and param.stride != 1):
            raise ctx.error(layer, "global pooling takes no padding and stride 1 (as Caffe requires)")
        return tuple(spatial_shape), (1, 1), (0, 0)
    if param.HasField("kernel_h") or param.HasField("kernel_w"):
        kernel = (param.kernel_h, param.kernel_w)
    else:
        kernel = (param.kernel_size, param.kernel_size)
    if 0 in kernel:
        raise ctx.error(layer, "has no kernel size (kernel_size, or kernel_h and kernel_w)")
    explicit = param.HasField("stride_h") or param.HasField("stride_w")
    stride = (param.stride_h, param.stride_w) if explicit else (param.stride, param.stride)
    if 0 in stride:
        raise ctx.error(layer, f"{'stride_h/stride_w' if explicit else 'stride'} = {list(stride)} must be positive in "
                               "every dimension; fix the model")
    pad = (param.pad_h, param.pad_w) if param.HasField("pad_h") or param.HasField("pad_w") else (param.pad,) * 2
    if any(p >= k for p, k in zip(pad, kernel)):
        raise ctx.error(layer, f"padding {pad} must be smaller than the kernel {kernel} (as Caffe requires)")
    return kernel, stride, pad


@caffe_converter("Pooling")
def pooling(ctx, layer):
    x, param = ctx.input(layer), layer.pooling_param
    if len(x.shape) != 4:
        raise ctx.error(layer, f"pools 4-d blobs (N, C, H, W); got shape {x.shape}")
    if param.pool not in (_POOL.MAX, _POOL.AVE):
        raise ctx.error(layer, f"pooling method {_POOL.PoolMethod.Name(param.pool)} is a training-time method; "
                               "only MAX and AVE are supported")
    kind = PoolingType.MAX if param.pool == _POOL.MAX else PoolingType.AVERAGE
    kernel, stride, pad = _pooling_window(ctx, layer, param, x.shape[2:])
    if param.global_pooling:
        return [ctx.network.add_global_pooling(x, kind, name=layer.name).get_output(0)]
    # Caffe rounds output sizes up, drops a last window that would start in the padding, and divides an
    # average by the window clipped to the padded map (padding counts, the ceil overhang does not): the
    # Pooling layer kind's ceil_mode + count_include_pad are defined the same way
    ceil = param.round_mode == _POOL.CEIL
    return [ctx.network.add_pooling(x, kind, kernel, stride, pad, ceil_mode=ceil, count_include_pad=True,
                                    name=layer.name).get_output(0)]


@caffe_converter("LRN")
def lrn(ctx, layer):
    x, param, net = ctx.input(layer), layer.lrn_param, ctx.network
    size = param.local_size
    if size % 2 == 0:
        raise ctx.error(layer, f"local_size {size} must be odd (as Caffe requires)")
    if param.norm_region == _LRN.ACROSS_CHANNELS:
        # x / (k + alpha / size * sum of squares over `size` channels) ** beta, as the LRN layer kind
        return [net.add_lrn(x, size, param.alpha, param.beta, param.k, name=layer.name).get_output(0)]
    # WITHIN_CHANNEL: x * (1 + alpha * mean of squares over a size x size window, padding counted) ** -beta
    name = layer.name
    squares = net.add_elementwise(x, x, ElementWiseOperation.PROD, name=f"{name}/square").get_output(0)
    pad = (size - 1) // 2
    mean = net.add_pooling(squares, PoolingType.AVERAGE, (size, size), 1, pad, ceil_mode=True,
                           count_include_pad=True, name=f"{name}/pool").get_output(0)
    factor = net.add_scale(mean, ScaleMode.UNIFORM, shift=_scalar(1.0), scale=_scalar(param.alpha),
                           power=_scalar(-param.beta), name=f"{name}/power").get_output(0)
    return [net.add_elementwise(x, factor, ElementWiseOperation.PROD, name=name).get_output(0)]


def _scalar(value: float):
    import numpy as np

    return np.asarray([value], dtype=np.float32)
