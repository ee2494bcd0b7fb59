"""Data movement and combination: Concat, Slice, Split, Flatten, Reshape, Permute, Softmax, Eltwise."""
from __future__ import annotations

import numpy as np

from ....ir import ops
from ....ir.ops import ElementWiseOperation, ScaleMode
from ....network import resolve_reshape
from ..schema import caffe_pb2
from ..registry import caffe_converter

_ELTWISE = caffe_pb2.EltwiseParameter


def _axis(ctx, layer, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ctx.error(layer, f"axis {axis} is out of range for a blob of {rank} dims")
    return axis % rank


@caffe_converter("Concat")
def concat(ctx, layer):
    inputs, param = ctx.inputs(layer), layer.concat_param
    if not inputs:
        raise ctx.error(layer, "has no bottom blobs; a Concat needs at least one")
    axis = param.axis if param.HasField("axis") or not param.HasField("concat_dim") else param.concat_dim
    axis = _axis(ctx, layer, axis, len(inputs[0].shape))
    if len(inputs) == 1:
        return inputs
    return [ctx.network.add_concatenation(inputs, axis, name=layer.name).get_output(0)]


@caffe_converter("Slice")
def slice_layer(ctx, layer):
    x, param = ctx.input(layer), layer.slice_param
    axis = param.axis if param.HasField("axis") or not param.HasField("slice_dim") else param.slice_dim
    axis, count = _axis(ctx, layer, axis, len(x.shape)), len(layer.top)
    if count == 0:
        raise ctx.error(layer, "has no top blobs; a Slice needs at least one")
    size = x.shape[axis]
    if param.slice_point:
        points = [0, *param.slice_point, size]
        if len(points) != count + 1 or any(b <= a for a, b in zip(points, points[1:])):
            raise ctx.error(layer, f"slice points {list(param.slice_point)} must be increasing, inside the axis "
                                   f"(size {size}), and one fewer than its {count} tops")
        sizes = tuple(b - a for a, b in zip(points, points[1:]))
    else:
        if size % count:
            raise ctx.error(layer, f"cannot slice axis {axis} of size {size} into {count} equal parts")
        sizes = (size // count,) * count
    return ctx.network.add_layer(ops.Split(axis, sizes), [x], name=layer.name).outputs


@caffe_converter("Split")
def split(ctx, layer):
    """Every top is the bottom (Caffe copies; values are immutable here)."""
    return [ctx.input(layer)] * len(layer.top)


@caffe_converter("Flatten")
def flatten(ctx, layer):
    # a V1 (`layers {`) FLATTEN has no parameters: Caffe's defaults, axis 1 to the last
    x, param = ctx.input(layer), getattr(layer, "flatten_param", caffe_pb2.FlattenParameter())
    rank = len(x.shape)
    start, end = _axis(ctx, layer, param.axis, rank), _axis(ctx, layer, param.end_axis, rank)
    merged = int(np.prod(x.shape[start:end + 1], dtype=np.int64))
    dims = (*x.shape[:start], merged, *x.shape[end + 1:])
    return [ctx.network.add_shuffle(x, reshape_dims=dims, name=layer.name).get_output(0)]


@caffe_converter("Reshape")
def reshape(ctx, layer):
    """Replaces the dims [axis, axis + num_axes) by `shape` (0 copies an input dim, one -1 is inferred)."""
    x, param = ctx.input(layer), layer.reshape_param
    rank = len(x.shape)
    start = param.axis if param.axis >= 0 else rank + 1 + param.axis
    end = rank if param.num_axes == -1 else start + param.num_axes
    if not 0 <= start <= end <= rank:
        raise ctx.error(layer, f"axis {param.axis} and num_axes {param.num_axes} do not fit a blob of {rank} dims")
    target = [int(d) for d in param.shape.dim]
    replaced = list(x.shape[start:end])
    target = [replaced[i] if d == 0 else d for i, d in enumerate(target)]  # 0: the input dim at that position
    try:
        dims = resolve_reshape(x.shape, [*x.shape[:start], *target, *x.shape[end:]], allow_zero_copy=False)
    except Exception as error:
        raise ctx.error(layer, str(error)) from None
    return [ctx.network.add_shuffle(x, reshape_dims=dims, name=layer.name).get_output(0)]


@caffe_converter("Permute")
def permute(ctx, layer):
    """SSD's Permute: `order` lists the leading axes of the output; the axes it leaves out follow in order."""
    x, rank = ctx.input(layer), len(ctx.input(layer).shape)
    order = []
    for axis in layer.permute_param.order:
        if axis >= rank or axis in order:
            raise ctx.error(layer, f"order {list(layer.permute_param.order)} is not a permutation of {rank} axes")
        order.append(int(axis))
    order += [a for a in range(rank) if a not in order]
    if order == list(range(rank)):
        return [x]
    return [ctx.network.add_shuffle(x, first_transpose=order, name=layer.name).get_output(0)]


@caffe_converter("Softmax")
def softmax(ctx, layer):
    x = ctx.input(layer)
    axis = _axis(ctx, layer, layer.softmax_param.axis, len(x.shape))
    return [ctx.network.add_softmax(x, axis, name=layer.name).get_output(0)]


@caffe_converter("Eltwise")
def eltwise(ctx, layer):
    """SUM (each input times its coefficient), PROD or MAX over any number of inputs."""
    inputs, param, net = ctx.inputs(layer), layer.eltwise_param, ctx.network
    if len(inputs) < 2:
        raise ctx.error(layer, f"needs at least 2 bottoms, has {len(inputs)}")
    if any(tuple(t.shape) != tuple(inputs[0].shape) for t in inputs):
        raise ctx.error(layer, f"bottoms have different shapes {[t.shape for t in inputs]}; Eltwise needs equal ones")
    operation = {_ELTWISE.SUM: ElementWiseOperation.SUM, _ELTWISE.PROD: ElementWiseOperation.PROD,
                 _ELTWISE.MAX: ElementWiseOperation.MAX}[param.operation]
    coefficients = list(param.coeff)
    if coefficients and (param.operation != _ELTWISE.SUM or len(coefficients) != len(inputs)):
        raise ctx.error(layer, f"has {len(coefficients)} coefficients for {len(inputs)} bottoms; coefficients are "
                               "for SUM, one per bottom")
    if coefficients and any(c != 1.0 for c in coefficients):
        inputs = [t if c == 1.0 else net.add_scale(t, ScaleMode.UNIFORM, scale=np.asarray([c], np.float32),
                                                   name=f"{layer.name}/coeff{i}").get_output(0)
                  for i, (t, c) in enumerate(zip(inputs, coefficients))]
    result = inputs[0]
    for index, tensor in enumerate(inputs[1:], start=1):
        last = index == len(inputs) - 1
        result = net.add_elementwise(result, tensor, operation,
                                     name=layer.name if last else f"{layer.name}/{index}").get_output(0)
    return [result]
