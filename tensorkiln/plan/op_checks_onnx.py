"""Attribute checks of the layer kinds of ops/onnx_coverage.py and ops/custom.py (see op_checks.py for the registry
and the contract). Several of these kinds compute their output shapes on the meta device from their attributes alone
(data-dependent outputs, ROI pooling, deformable convolution, DFT), so their checks hold every shape rule the real
kernel relies on."""
from __future__ import annotations

import base64
import binascii
import json
import math
import re

from ..ir import ops
from ..ir.dtypes import DataType
from .op_checks import (Inputs, at_most_inputs, axis_in, bounded, buffer, check_convolution_shapes, check_groups,
                        check_resize, dim, distinct_axes, finite, length, needs_no_check, non_negative, one_of,
                        op_check, optional, positive, required, window_attributes)
from .schema import MAX_TENSOR_BYTES, PlanProblem, json_depth_ok

_EINSUM = re.compile(r"[A-Za-z,.\->]{1,256}", re.ASCII)
_SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")
_RECURRENT_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_RECURRENT_ACTIVATIONS_PER_DIRECTION = {"lstm": 3, "gru": 2, "rnn": 1}
_RECURRENT_ACTIVATIONS = ("sigmoid", "tanh", "relu", "affine", "leakyrelu", "thresholdedrelu", "scaledtanh",
                          "hardsigmoid", "elu", "softsign", "softplus")
_INTEGER_DTYPES = (DataType.INT8, DataType.UINT8, DataType.INT16, DataType.INT32, DataType.INT64)


@op_check(ops.QuantizeLinear, ops.DequantizeLinear)
def _quantize_linear(op, inputs: Inputs) -> None:
    x, scale = required(inputs, 0, "data"), required(inputs, 1, "scale")
    # the kernel (kernels/cpu/sampling.py) reads the axis only for a per-axis scale: one of several values, not
    # already of the input's rank (blocked); a single scale is per tensor, whatever the axis says
    if math.prod(scale.shape) != 1 and len(scale.shape) != len(x.shape):
        axis_in("axis", op.axis, len(x.shape))
    if isinstance(op, ops.QuantizeLinear) and op.output_dtype not in _INTEGER_DTYPES:
        raise PlanProblem(f"output_dtype {op.output_dtype.value!r} is not an integer type")


@op_check(ops.ArgReduce, ops.CumulativeSum, ops.CumulativeProduct, ops.GatherElements, ops.Hardmax,
          ops.TensorScatter)
def _axis(op, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    axis = axis_in("axis", op.axis, len(x.shape))
    if isinstance(op, ops.TensorScatter) and op.circular and x.shape and dim(x, axis) == 0:
        raise PlanProblem(f"a circular write needs a non-empty axis {op.axis}")


@op_check(ops.Unique, ops.Compress)
def _optional_axis(op, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    if op.axis is not None:
        if not x.shape:
            raise PlanProblem(f"axis {op.axis} is given for a 0-d input")
        axis_in("axis", op.axis, len(x.shape))
    if isinstance(op, ops.Compress):
        required(inputs, 1, "condition")


@op_check(ops.TopK)
def _top_k(op: ops.TopK, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    axis = axis_in("axis", op.axis, len(x.shape))
    size = dim(x, axis) if x.shape else 1
    if op.k < 0 or (size is not None and op.k > size):
        raise PlanProblem(f"k {op.k} must lie from 0 to the {size} of axis {op.axis}")


@op_check(ops.Einsum)
def _einsum(op: ops.Einsum, inputs: Inputs) -> None:
    if not _EINSUM.fullmatch(op.equation.replace(" ", "")):
        raise PlanProblem(f"equation {op.equation[:60]!r} is not an einsum equation (letters, ',', '...', '->')")


@op_check(ops.GatherND)
def _gather_nd(op: ops.GatherND, inputs: Inputs) -> None:
    data, indices = required(inputs, 0, "data"), required(inputs, 1, "indices")
    if not 0 <= op.batch_dims < min(len(data.shape), len(indices.shape)):
        raise PlanProblem(f"batch_dims {op.batch_dims} must be >= 0 and below the ranks of data and indices")
    depth = dim(indices, -1)
    if depth is not None and not 1 <= depth <= len(data.shape) - op.batch_dims:
        raise PlanProblem(f"indices address {depth} dims of a data tensor of rank {len(data.shape)}")


@op_check(ops.ScatterElements, ops.ScatterND)
def _scatter(op, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    required(inputs, 1, "indices")
    required(inputs, 2, "updates")
    one_of("reduction", op.reduction, _SCATTER_REDUCTIONS)
    if isinstance(op, ops.ScatterElements):
        axis_in("axis", op.axis, len(x.shape))


@op_check(ops.OneHot)
def _one_hot(op: ops.OneHot, inputs: Inputs) -> None:
    indices = required(inputs, 0, "indices")
    required(inputs, 1, "values")
    positive("depth", op.depth)
    bounded("depth", op.depth)
    axis_in("axis", op.axis, len(indices.shape) + 1)


@op_check(ops.Trilu)
def _trilu(op: ops.Trilu, inputs: Inputs) -> None:
    required(inputs, 0, "data")
    bounded("k", op.k)


@op_check(ops.GroupNorm)
def _group_norm(op: ops.GroupNorm, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    if len(x.shape) < 2:
        raise PlanProblem(f"input {x.name!r} has rank {len(x.shape)}; group normalization takes [N, C, ...]")
    positive("num_groups", op.num_groups)
    channels = dim(x, 1)
    if channels is not None and channels % op.num_groups:
        raise PlanProblem(f"num_groups {op.num_groups} must divide the {channels} channels")


@op_check(ops.GridSample)
def _grid_sample(op: ops.GridSample, inputs: Inputs) -> None:
    required(inputs, 0, "data")
    required(inputs, 1, "grid")
    one_of("mode", op.mode, ("bilinear", "nearest", "bicubic"))
    one_of("padding_mode", op.padding_mode, ("zeros", "border", "reflection"))


@op_check(ops.Recurrent)
def _recurrent(op: ops.Recurrent, inputs: Inputs) -> None:
    x, weights, recurrence = (required(inputs, i, what) for i, what in enumerate(("sequence", "W", "R")))
    at_most_inputs(inputs, 8)
    one_of("cell", op.cell, _RECURRENT_GATES)
    one_of("direction", op.direction, ("forward", "reverse", "bidirectional"))
    one_of("layout", str(op.layout), ("0", "1"))
    positive("hidden_size", op.hidden_size)
    bounded("hidden_size", op.hidden_size)
    directions = 2 if op.direction == "bidirectional" else 1
    for name in op.activations:
        one_of("activations", name.lower(), _RECURRENT_ACTIVATIONS)
    if op.activations:
        length("activations", op.activations, _RECURRENT_ACTIVATIONS_PER_DIRECTION[op.cell] * directions,
               f" ({op.cell} cells, {directions} directions)")
    if len(x.shape) != 3 or len(weights.shape) != 3 or len(recurrence.shape) != 3:
        raise PlanProblem("the sequence, W and R must be 3-D")
    gates = _RECURRENT_GATES[op.cell] * op.hidden_size
    expected = {"W": (weights, (directions, gates)), "R": (recurrence, (directions, gates, op.hidden_size))}
    for name, (spec, leading) in expected.items():
        if tuple(spec.shape[:len(leading)]) != leading:
            raise PlanProblem(f"{name} {spec.name!r} has shape {list(spec.shape)}, not {list(leading)} first")


@op_check(ops.NonMaxSuppression)
def _non_max_suppression(op: ops.NonMaxSuppression, inputs: Inputs) -> None:
    boxes, scores = required(inputs, 0, "boxes"), required(inputs, 1, "scores")
    non_negative("max_output_boxes_per_class", op.max_output_boxes_per_class)
    # the meta kernel reports only a data-dependent count: the shapes the real one indexes are checked here
    if len(boxes.shape) != 3 or dim(boxes, 2) not in (4, None) or len(scores.shape) != 3:
        raise PlanProblem(f"boxes {boxes.name!r} must be [batch, boxes, 4] and scores {scores.name!r} "
                          "[batch, classes, boxes]")
    for a, b in ((dim(boxes, 0), dim(scores, 0)), (dim(boxes, 1), dim(scores, 2))):
        if a is not None and b is not None and a != b:
            raise PlanProblem(f"boxes {list(boxes.shape)} and scores {list(scores.shape)} disagree")


@op_check(ops.OnnxAttention)
def _onnx_attention(op: ops.OnnxAttention, inputs: Inputs) -> None:
    q = required(inputs, 0, "queries")
    required(inputs, 1, "keys")
    required(inputs, 2, "values")
    at_most_inputs(inputs, 7)
    for name in ("q_num_heads", "kv_num_heads"):
        value = getattr(op, name)
        if value is not None:
            positive(name, value)
            bounded(name, value)
        elif len(q.shape) == 3:
            raise PlanProblem(f"3-D inputs need {name}")
    one_of("qk_matmul_output_mode", str(op.qk_matmul_output_mode), ("0", "1", "2", "3"))
    if op.softmax_precision is not None and not op.softmax_precision.is_floating:
        raise PlanProblem(f"softmax_precision {op.softmax_precision.value!r} is not a floating type")
    for name in ("left_window", "right_window"):
        if getattr(op, name) < -1:
            raise PlanProblem(f"{name} {getattr(op, name)} must be >= -1")


@op_check(ops.RotaryEmbedding)
def _rotary_embedding(op: ops.RotaryEmbedding, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    required(inputs, 1, "cos cache")
    required(inputs, 2, "sin cache")
    non_negative("num_heads", op.num_heads)
    non_negative("rotary_dim", op.rotary_dim)
    if len(x.shape) == 3:
        positive("num_heads", op.num_heads)
    elif len(x.shape) != 4:
        raise PlanProblem(f"input {x.name!r} must be [B, H, S, D] or [B, S, H * D]")


@op_check(ops.ReverseSequence)
def _reverse_sequence(op: ops.ReverseSequence, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    required(inputs, 1, "sequence lengths")
    if len(x.shape) < 2 or {op.batch_axis, op.time_axis} != {0, 1}:
        raise PlanProblem(f"batch_axis {op.batch_axis} and time_axis {op.time_axis} must be 0 and 1 of an input of "
                          "rank 2 or more")


@op_check(ops.DFT)
def _dft(op: ops.DFT, inputs: Inputs) -> None:
    x = required(inputs, 0, "signal")
    rank = len(x.shape)
    if rank < 2 or dim(x, -1) not in (1, 2, None):
        raise PlanProblem(f"input {x.name!r} must end in a dim of 1 (real) or 2 (complex)")
    if axis_in("axis", op.axis, rank) == rank - 1:
        raise PlanProblem(f"axis {op.axis} is the complex pair's dim")
    positive("length", op.length)
    bounded("length", op.length)


@op_check(ops.STFT)
def _stft(op: ops.STFT, inputs: Inputs) -> None:
    signal = required(inputs, 0, "signal")
    positive("frame_step", op.frame_step)
    positive("frame_length", op.frame_length)
    if len(signal.shape) != 3 or dim(signal, 2) not in (1, 2, None):
        raise PlanProblem(f"signal {signal.name!r} must be [batch, length, 1 or 2]")
    size = dim(signal, 1)
    if size is not None and op.frame_length > size:
        raise PlanProblem(f"frame_length {op.frame_length} is longer than the signal's {size}")
    window = optional(inputs, 1)
    if window is not None and list(window.shape) != [op.frame_length]:
        raise PlanProblem(f"window {window.name!r} has shape {list(window.shape)}, not [{op.frame_length}]")


@op_check(ops.Col2Im)
def _col2im(op: ops.Col2Im, inputs: Inputs) -> None:
    x = required(inputs, 0, "columns")
    rank = len(op.image_shape)
    if rank < 1 or len(x.shape) != 3:
        raise PlanProblem("needs an image_shape and a 3-D input [N, C * block size, L]")
    window_attributes(op, rank, stride="strides", dilation="dilations")
    length("block_shape", op.block_shape, rank)
    positive("block_shape", op.block_shape)
    non_negative("image_shape", op.image_shape)
    block = math.prod(op.block_shape)
    columns = dim(x, 1)
    # the kernel loops over every block offset: the block must divide the input's channels (which bounds it)
    if columns is not None and columns % block:
        raise PlanProblem(f"block_shape {list(op.block_shape)} of {block} must divide the input's {columns}")
    padded = [size + op.pads[i] + op.pads[rank + i] for i, size in enumerate(op.image_shape)]
    for size, dilation, kernel in zip(padded, op.dilations, op.block_shape):
        if size < dilation * (kernel - 1) + 1:
            raise PlanProblem(f"block_shape {list(op.block_shape)} does not fit the padded image {padded}")
    channels = None if columns is None else columns // block
    buffer("the padded image", [dim(x, 0), channels, *padded], x.dtype.itemsize)


@op_check(ops.AffineGrid)
def _affine_grid(op: ops.AffineGrid, inputs: Inputs) -> None:
    theta = required(inputs, 0, "theta")
    length("size", op.size, len(op.size) if len(op.size) in (4, 5) else 4, " ([N, C, H, W] or [N, C, D, H, W])")
    non_negative("size", op.size)
    if dim(theta, 0) not in (op.size[0], None):
        raise PlanProblem(f"size {list(op.size)} is for a batch of {op.size[0]}, theta {list(theta.shape)}")


@op_check(ops.ResizeAntialias)
def _resize_antialias(op: ops.ResizeAntialias, inputs: Inputs) -> None:
    check_resize(op, required(inputs, 0, "data"))


@op_check(ops.MaxUnpool)
def _max_unpool(op: ops.MaxUnpool, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    required(inputs, 1, "indices")
    length("pooled_shape", op.pooled_shape, len(x.shape), " (one per dim of the input)")
    length("output_shape", op.output_shape, len(x.shape), " (one per dim of the input)")
    non_negative("pooled_shape", op.pooled_shape)
    non_negative("output_shape", op.output_shape)
    buffer("the unpooled tensor", op.pooled_shape, x.dtype.itemsize)


@op_check(ops.RoiAlign, ops.MaxRoiPool)
def _roi_pooling(op, inputs: Inputs) -> None:
    x, rois = required(inputs, 0, "data"), required(inputs, 1, "rois")
    align = isinstance(op, ops.RoiAlign)
    height, width = (op.output_height, op.output_width) if align else (op.pooled_height, op.pooled_width)
    positive("output size", (height, width))
    bounded("output size", height * width)
    finite("spatial_scale", op.spatial_scale)
    corners = 4 if align else 5  # the meta kernel reports [rois, C, height, width] from these alone
    if len(x.shape) != 4 or len(rois.shape) != 2 or dim(rois, 1) not in (corners, None):
        raise PlanProblem(f"needs a 4-D input and rois of shape [R, {corners}]")
    if align:
        indices = required(inputs, 2, "batch indices")
        non_negative("sampling_ratio", op.sampling_ratio)
        one_of("mode", op.mode, ("avg", "max"))
        if list(indices.shape) != [rois.shape[0]]:
            raise PlanProblem(f"batch indices {list(indices.shape)} must be [{rois.shape[0]}]")


@op_check(ops.QLinearConv)
def _qlinear_conv(op: ops.QLinearConv, inputs: Inputs) -> None:
    x, weight = required(inputs, 0, "data"), required(inputs, 3, "weight")
    at_most_inputs(inputs, 9)
    check_convolution_shapes(op, x, weight, transposed=False)
    dims = [dim(x, 0), dim(x, 1)] + [None if dim(x, 2 + a) is None else dim(x, 2 + a) + op.pads[a]
                                     + op.pads[len(x.shape) - 2 + a] for a in range(len(x.shape) - 2)]
    buffer("the padded input", dims, 8)  # float64


@op_check(ops.DeformConv)
def _deform_conv(op: ops.DeformConv, inputs: Inputs) -> None:
    x, weight, offset = required(inputs, 0, "data"), required(inputs, 1, "weight"), required(inputs, 2, "offset")
    at_most_inputs(inputs, 5)
    if len(x.shape) != 4:
        raise PlanProblem(f"input {x.name!r} must be 4-D")
    check_convolution_shapes(op, x, weight, transposed=False)
    check_groups(op.offset_groups, dim(x, 1))
    # the meta kernel reports the offset's spatial shape: it must be the convolution's output shape
    kernel = [dim(weight, 2), dim(weight, 3)]
    out = []
    for axis in range(2):
        size = dim(x, 2 + axis)
        if size is None or kernel[axis] is None:
            return
        span = op.dilation[axis] * (kernel[axis] - 1) + 1
        out.append((size + op.pads[axis] + op.pads[2 + axis] - span) // op.stride[axis] + 1)
    taps = kernel[0] * kernel[1]
    expected = {"offset": (offset, 2), "mask": (optional(inputs, 4), 1)}
    for name, (spec, per_tap) in expected.items():
        want = [dim(x, 0), op.offset_groups * per_tap * taps, *out]
        if spec is not None and list(spec.shape) != want:
            raise PlanProblem(f"{name} {spec.name!r} has shape {list(spec.shape)}, not {want}")
    bias = optional(inputs, 3)
    if bias is not None and list(bias.shape) != [dim(weight, 0)]:
        raise PlanProblem(f"bias {bias.name!r} has shape {list(bias.shape)}, not [{dim(weight, 0)}]")


@op_check(ops.LinearAttention)
def _linear_attention(op: ops.LinearAttention, inputs: Inputs) -> None:
    for index, what in enumerate(("query", "key", "value")):
        required(inputs, index, what)
    positive("q_num_heads", op.q_num_heads)
    positive("kv_num_heads", op.kv_num_heads)
    if op.q_num_heads % op.kv_num_heads:
        raise PlanProblem(f"kv_num_heads {op.kv_num_heads} must divide q_num_heads {op.q_num_heads}")
    one_of("update_rule", op.update_rule, ("linear", "gated", "delta", "gated_delta"))


@op_check(ops.CausalConvWithState)
def _causal_conv(op: ops.CausalConvWithState, inputs: Inputs) -> None:
    x, weight = required(inputs, 0, "data"), required(inputs, 1, "weight")
    one_of("activation", op.activation, ("none", "silu", "swish"))
    if len(x.shape) != 3 or len(weight.shape) != 3 or dim(weight, 2) == 0:
        raise PlanProblem("needs a 3-D input and a 3-D weight [C, 1, k] with k >= 1")


@op_check(ops.Plugin)
def _plugin(op: ops.Plugin, inputs: Inputs) -> None:
    if not op.type:
        raise PlanProblem("names no plugin type")
    try:
        params = json.loads(op.params_json)
    except (ValueError, RecursionError):
        raise PlanProblem("params_json is not JSON") from None
    if not isinstance(params, dict) or not json_depth_ok(params):
        raise PlanProblem("params_json must be a JSON object of plain values")


@op_check(ops.OnnxFallback)
def _onnx_fallback(op: ops.OnnxFallback, inputs: Inputs) -> None:
    import onnx
    from google.protobuf.message import DecodeError

    if len(op.output_dtypes) != len(op.output_shapes):
        raise PlanProblem(f"has {len(op.output_dtypes)} output dtypes for {len(op.output_shapes)} output shapes")
    for dtype, shape in zip(op.output_dtypes, op.output_shapes):
        non_negative("output_shapes", shape)
        buffer("an output", shape, dtype.itemsize)
    if not 1 <= op.opset <= 64:
        raise PlanProblem(f"opset {op.opset} is not an ONNX opset")
    try:
        node = onnx.NodeProto.FromString(base64.b64decode(op.node, validate=True))
    except (binascii.Error, ValueError, DecodeError, RecursionError):
        raise PlanProblem("node is not a base64-encoded ONNX NodeProto") from None
    if node.op_type != op.op_type or node.domain not in ("", "ai.onnx"):
        raise PlanProblem(f"node is a {node.domain}::{node.op_type} node, not the {op.op_type} it claims to be")
    if len([name for name in node.output if name]) != len(op.output_dtypes):
        raise PlanProblem(f"node has {len(node.output)} outputs, the layer declares {len(op.output_dtypes)}")
    if len(op.node) > MAX_TENSOR_BYTES:
        raise PlanProblem("node is too large")


needs_no_check("no attributes; shapes and dtypes are checked by shape inference", ops.Determinant, ops.NonZero,
               ops.DynamicQuantizeLinear, ops.QLinearMatMul)
needs_no_check("the target dtype is a closed enum; the reinterpretation is checked by shape inference", ops.BitCast)
