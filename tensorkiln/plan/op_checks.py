"""Attribute checks per layer kind, for plans read from engine files: strides, dilations, groups, pads, kernel sizes,
axes, permutations, slices, split sizes and closed vocabularies, against the step's input shapes.

A registry filled by the `op_check` decorator, one entry per layer kind (design.md section 3). Kinds whose attributes
need nothing beyond their types (checked by ir/serialize.py) and shape inference are listed in NO_OP_CHECK with the
reason, so that a new layer kind is noticed: tests assert every kind of OP_KINDS is in one or the other.

The checks run before the step's shape inference and keep from every kernel, including the meta-device ones, the
values that crash or hang them (a stride of 0 is a division by zero inside C++) or make them allocate far more than
the step's declared tensors: a step that passes its check and its shape inference runs with shapes as declared.
This module holds the registry, its helpers and the layer kinds of ops/layers.py and ops/optimized.py; the kinds of
ops/onnx_coverage.py and ops/custom.py are in op_checks_onnx.py.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from ..ir import ops
from ..ir.ops import OpAttrs
from .plan import TensorSpec
from .schema import MAX_DIM, MAX_TENSOR_BYTES, PlanProblem

Inputs = Sequence[TensorSpec | None]
OpCheck = Callable[[OpAttrs, Inputs], None]

OP_CHECKS: dict[str, OpCheck] = {}
NO_OP_CHECK: dict[str, str] = {}  # layer kind -> why its attributes need no check of their own


def op_check(*classes: type[OpAttrs]):
    """Register a check `fn(op, input specs)` for the layer kinds of `classes`; it raises PlanProblem."""

    def register(fn: OpCheck) -> OpCheck:
        for cls in classes:
            _claim(cls.KIND)
            OP_CHECKS[cls.KIND] = fn
        return fn

    return register


def needs_no_check(reason: str, *classes: type[OpAttrs]) -> None:
    for cls in classes:
        _claim(cls.KIND)
        NO_OP_CHECK[cls.KIND] = reason


def _claim(kind: str) -> None:
    if kind in OP_CHECKS or kind in NO_OP_CHECK:
        raise ValueError(f"layer kind {kind!r} has two attribute checks")


def check_op(op: OpAttrs, inputs: Inputs) -> None:
    """Run the layer kind's check; a kind with neither a check nor a reason for none is refused."""
    check = OP_CHECKS.get(op.KIND)
    if check is not None:
        check(op, inputs)
    elif op.KIND not in NO_OP_CHECK:
        raise PlanProblem(f"layer kind {op.KIND!r} has no attribute check, so this runtime cannot load it safely")


# ---- helpers: each raises PlanProblem naming the attribute ----------------------------------------------------------
def required(inputs: Inputs, index: int, what: str) -> TensorSpec:
    spec = inputs[index] if index < len(inputs) else None
    if spec is None:
        raise PlanProblem(f"needs its {what} (input {index})")
    return spec


def optional(inputs: Inputs, index: int) -> TensorSpec | None:
    return inputs[index] if index < len(inputs) else None


def at_most_inputs(inputs: Inputs, count: int) -> None:
    if len(inputs) > count:
        raise PlanProblem(f"has {len(inputs)} inputs; this layer kind takes at most {count}")


def dim(spec: TensorSpec, axis: int) -> int | None:
    """A dim of a spec, None where it is known only at run time."""
    size = spec.shape[axis]
    return None if size < 0 else size


def _shown(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def positive(name: str, value: int | tuple[int, ...]) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if any(v <= 0 for v in values):
        raise PlanProblem(f"{name} {_shown(value)} must be > 0")


def non_negative(name: str, value: int | tuple[int, ...]) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if any(v < 0 for v in values):
        raise PlanProblem(f"{name} {_shown(value)} must be >= 0")


def length(name: str, values: tuple, expected: int, why: str = "") -> None:
    if len(values) != expected:
        raise PlanProblem(f"{name} {_shown(values)} must have {expected} entries{why}")


def bounded(name: str, value: int, limit: int = MAX_DIM) -> None:
    if abs(value) > limit:
        raise PlanProblem(f"{name} {value} is beyond {limit}")


def axis_in(name: str, axis: int, rank: int) -> int:
    """The axis, normalized; it must lie in [-rank, rank) (a 0-d tensor takes the axes of a 1-d one, as torch does)."""
    extent = max(rank, 1)
    if not -extent <= axis < extent:
        raise PlanProblem(f"{name} {axis} is out of range for an input of rank {rank}")
    return axis % extent


def distinct_axes(name: str, axes: Iterable[int], rank: int) -> None:
    normalized = [axis_in(name, axis, rank) for axis in axes]
    if len(set(normalized)) != len(normalized):
        raise PlanProblem(f"{name} {list(axes)} names an axis twice")


def permutation(name: str, values: tuple[int, ...], rank: int) -> None:
    if sorted(values) != list(range(rank)):
        raise PlanProblem(f"{name} {list(values)} is not a permutation of the {rank} axes")


def one_of(name: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise PlanProblem(f"{name} {value!r} is not one of {', '.join(repr(c) for c in choices)}")


def finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise PlanProblem(f"{name} {value!r} must be a finite number")


def buffer(what: str, dims: Iterable[int | None], itemsize: int) -> None:
    """A buffer a kernel makes for the step (padded input, full transposed output) must stay within the limit."""
    count = 1
    for size in dims:
        if size is None:  # known only at run time: the declared tensors bound it there
            return
        count *= max(size, 0)
    if count * itemsize > MAX_TENSOR_BYTES:
        raise PlanProblem(f"{what} would take {count * itemsize} bytes, more than the {MAX_TENSOR_BYTES} a step "
                          "may use")


def spatial_rank(x: TensorSpec, lowest: int = 1, highest: int = 3) -> int:
    spatial = len(x.shape) - 2
    if not lowest <= spatial <= highest:
        raise PlanProblem(f"input {x.name!r} has rank {len(x.shape)}; this layer takes {lowest + 2}-D to "
                          f"{highest + 2}-D inputs")
    return spatial


# ---- convolutions and pooling ---------------------------------------------------------------------------------------
def window_attributes(op, spatial: int, stride: str = "stride", dilation: str = "dilation") -> None:
    """Strides and dilations: one per spatial dim, > 0; pads: begins then ends, >= 0."""
    length(stride, getattr(op, stride), spatial, f" (one per spatial dim of {spatial})")
    positive(stride, getattr(op, stride))
    length(dilation, getattr(op, dilation), spatial, f" (one per spatial dim of {spatial})")
    positive(dilation, getattr(op, dilation))
    length("pads", op.pads, 2 * spatial, " (the begins, then the ends of each spatial dim)")
    non_negative("pads", op.pads)
    for name in (stride, dilation, "pads"):
        for value in getattr(op, name):
            bounded(name, value)


def padded_dims(x: TensorSpec, pads: tuple[int, ...], extra: int = 0) -> list[int | None]:
    """The dims of x after its spatial dims got their pads (and `extra` more at the end)."""
    spatial = len(x.shape) - 2
    dims: list[int | None] = [dim(x, 0), dim(x, 1)]
    for axis in range(spatial):
        size = dim(x, 2 + axis)
        dims.append(None if size is None else size + pads[axis] + pads[spatial + axis] + extra)
    return dims


def check_groups(groups: int, channels: int | None, what: str = "input channels") -> None:
    positive("groups", groups)
    bounded("groups", groups)
    if channels is not None and channels % groups:
        raise PlanProblem(f"groups {groups} must divide the {channels} {what}")


def check_convolution_shapes(op, x: TensorSpec, weight: TensorSpec, transposed: bool) -> int:
    """Spatial attributes and the weight's shape against x: kernel sizes > 0, groups dividing the channels."""
    spatial = spatial_rank(x)
    window_attributes(op, spatial)
    if len(weight.shape) != len(x.shape):
        raise PlanProblem(f"weight {weight.name!r} has rank {len(weight.shape)}, input {x.name!r} rank {len(x.shape)}")
    positive("kernel size", tuple(d for d in weight.shape[2:]))
    channels, filters = dim(x, 1), dim(weight, 0)
    check_groups(op.groups, channels)
    if transposed:
        if channels is not None and filters is not None and filters != channels:
            raise PlanProblem(f"weight {weight.name!r} has {filters} filters for {channels} input channels")
    else:
        per_group = dim(weight, 1)
        if channels is not None and per_group is not None and per_group * op.groups != channels:
            raise PlanProblem(f"weight {weight.name!r} takes {per_group} channels per group; {op.groups} groups of "
                              f"it do not make the {channels} input channels")
        if filters is not None and filters % op.groups:
            raise PlanProblem(f"groups {op.groups} must divide the {filters} filters")
    return spatial


def check_activation(name: str, type_: ops.ActivationType | None, alpha: float) -> None:
    """The activation's parameters where some value fails in the kernel (the meta device does not notice)."""
    if type_ is ops.ActivationType.CELU and alpha == 0:
        raise PlanProblem(f"{name} celu has alpha 0, which CELU divides by")


def check_epilogue(op, inputs: Inputs) -> None:
    """Fused layers: x, weights, bias|None, residual|None, slope|None; the flags need their inputs."""
    if getattr(op, "int8_input_scale", 0.0):
        check_integer_operands(op, inputs)
    else:
        at_most_inputs(inputs, 5)
        x = optional(inputs, 0)
        if getattr(op, "int8_output_scale", 0.0) or (x is not None and x.dtype.value == "int8"):
            raise PlanProblem("an INT8 input or int8_output_scale needs int8_input_scale and the INT8 weights")
    check_activation("activation", op.activation, op.alpha)
    check_activation("post_activation", op.post_activation, op.post_alpha)
    if op.residual:
        required(inputs, 3, "residual")
    if op.prelu:
        required(inputs, 4, "PReLU slope")


def check_integer_operands(op, inputs: Inputs) -> None:
    """A layer with int8_input_scale (ops/optimized.py): two more inputs, per-channel INT8 weights of as many
    elements as the float weights, and one float32 scale per output channel (the weights' first dim; as int32 bits)."""
    scale = op.int8_input_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise PlanProblem(f"int8_input_scale {scale!r} must be a finite number > 0 (or 0: no INT8 input)")
    at_most_inputs(inputs, 7)
    output_scale = op.int8_output_scale
    if isinstance(output_scale, bool) or not isinstance(output_scale, (int, float)) or \
            not math.isfinite(output_scale) or output_scale < 0:
        raise PlanProblem(f"int8_output_scale {output_scale!r} must be a finite number >= 0 (0: a float output)")
    if output_scale and op.residual_in_place:
        raise PlanProblem("an INT8 output (int8_output_scale) cannot be stored over a float residual")
    if not (required(inputs, 0, "data").dtype.is_floating or inputs[0].dtype.value == "int8"):
        raise PlanProblem(f"the input of an INT8 layer is floating or int8, not {inputs[0].dtype.value}")
    weight, q, scales = required(inputs, 1, "weight"), required(inputs, 5, "INT8 weight"), required(inputs, 6,
                                                                                                     "weight scales")
    if q.dtype.value != "int8" or scales.dtype.value != "int32" or len(scales.shape) != 1:
        raise PlanProblem(f"INT8 weight {q.name!r} must be int8 and its scales {scales.name!r} a 1-D int32 "
                          f"vector (float32 bits), not {q.dtype.value} and {scales.dtype.value} of shape "
                          f"{list(scales.shape)}")
    if q.is_dynamic or scales.is_dynamic or weight.is_dynamic or math.prod(q.shape) != math.prod(weight.shape) \
            or not q.shape or scales.shape[0] != q.shape[0]:
        raise PlanProblem(f"INT8 weight {q.name!r} of shape {list(q.shape)} must hold the {list(weight.shape)} "
                          f"weights, one scale of {scales.name!r} ({list(scales.shape)}) per row")


@op_check(ops.Convolution, ops.FusedConvolution)
def _convolution(op, inputs: Inputs) -> None:
    x, weight = required(inputs, 0, "data"), required(inputs, 1, "weight")
    if isinstance(op, ops.FusedConvolution):
        check_epilogue(op, inputs)
    else:
        at_most_inputs(inputs, 3)
    check_convolution_shapes(op, x, weight, transposed=False)
    bias, filters = optional(inputs, 2), dim(weight, 0)
    if bias is not None and (len(bias.shape) != 1 or None not in (filters, dim(bias, 0)) and bias.shape[0] != filters):
        raise PlanProblem(f"bias {bias.name!r} of shape {list(bias.shape)} must be 1-D with one entry per filter "
                          f"({filters})")
    buffer("the padded input", padded_dims(x, op.pads), x.dtype.itemsize)


@op_check(ops.Deconvolution, ops.FusedDeconvolution)
def _deconvolution(op, inputs: Inputs) -> None:
    x, weight = required(inputs, 0, "data"), required(inputs, 1, "weight")
    if isinstance(op, ops.FusedDeconvolution):
        check_epilogue(op, inputs)
    else:
        at_most_inputs(inputs, 3)
    spatial = check_convolution_shapes(op, x, weight, transposed=True)
    length("output_padding", op.output_padding, spatial)
    non_negative("output_padding", op.output_padding)
    for value in op.output_padding:
        bounded("output_padding", value)
    # the kernel computes the full transposed convolution, then crops the pads: that whole result is allocated
    full: list[int | None] = [dim(x, 0), None if dim(weight, 1) is None else dim(weight, 1) * op.groups]
    for axis in range(spatial):
        size, kernel = dim(x, 2 + axis), dim(weight, 2 + axis)
        full.append(None if size is None or kernel is None else
                    (size - 1) * op.stride[axis] + op.dilation[axis] * (kernel - 1) + 1 + op.output_padding[axis])
    buffer("the full transposed convolution", full, x.dtype.itemsize)


@op_check(ops.Pooling)
def _pooling(op: ops.Pooling, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    spatial = spatial_rank(x)
    window_attributes(op, spatial)
    length("kernel", op.kernel, spatial, f" (one per spatial dim of {spatial})")
    positive("kernel", op.kernel)
    for value in op.kernel:
        bounded("kernel", value)
    if op.type is ops.PoolingType.LP:
        positive("p", op.p)
        bounded("p", op.p, 64)
    # ceil mode may pad the end by up to a stride more than declared
    buffer("the padded input", padded_dims(x, op.pads, max(op.stride)), max(x.dtype.itemsize, 4))


@op_check(ops.GlobalPooling)
def _global_pooling(op: ops.GlobalPooling, inputs: Inputs) -> None:
    required(inputs, 0, "data")
    if op.type is ops.PoolingType.LP:
        positive("p", op.p)
        bounded("p", op.p, 64)


@op_check(ops.LRN)
def _lrn(op: ops.LRN, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    positive("size", op.size)
    bounded("size", op.size)
    if len(x.shape) < 2:
        raise PlanProblem(f"input {x.name!r} has rank {len(x.shape)}; LRN takes [N, C, ...]")
    channels = dim(x, 1)
    padded = [dim(x, 0), None if channels is None else channels + op.size - 1,
              *(dim(x, a) for a in range(2, len(x.shape)))]
    buffer("the padded squares", padded, x.dtype.itemsize)


# ---- axes, permutations, slices ------------------------------------------------------------------------------------
@op_check(ops.Softmax, ops.FullyConnected, ops.LayerNorm, ops.RMSNorm, ops.Gather, ops.Concatenation)
def _axis(op, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    axis_in("axis", op.axis, len(x.shape))


@op_check(ops.Scale)
def _scale(op: ops.Scale, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    at_most_inputs(inputs, 4)
    axis_in("channel_axis", op.channel_axis, len(x.shape))


@op_check(ops.Shuffle)
def _shuffle(op: ops.Shuffle, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    rank = len(x.shape)
    if op.first_transpose is not None:
        permutation("first_transpose", op.first_transpose, rank)
    if op.reshape_dims is not None:
        if any(d < -1 for d in op.reshape_dims) or list(op.reshape_dims).count(-1) > 1:
            raise PlanProblem(f"reshape_dims {list(op.reshape_dims)} must hold sizes >= 0 (and at most one -1)")
        for value in op.reshape_dims:
            bounded("reshape_dims", value)
        rank = len(op.reshape_dims)
    if op.second_transpose is not None:
        permutation("second_transpose", op.second_transpose, rank)


@op_check(ops.Reduce)
def _reduce(op: ops.Reduce, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    distinct_axes("axes", op.axes, len(x.shape))


@op_check(ops.Slice)
def _slice(op: ops.Slice, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    count = len(op.axes)
    for name in ("starts", "ends", "steps"):
        length(name, getattr(op, name), count, " (one per axis)")
    distinct_axes("axes", op.axes, len(x.shape))
    for start, end, axis, step in zip(op.starts, op.ends, op.axes, op.steps):
        if step == 0:
            raise PlanProblem(f"steps {list(op.steps)} must not hold 0")
        for name, value in (("starts", start), ("ends", end), ("steps", step)):
            bounded(name, value)
        size = dim(x, axis_in("axes", axis, len(x.shape)))
        # a negative step gathers the positions start, start + step, ... > end: each must lie inside the dim
        if step < 0 and size is not None and not (-1 <= end <= max(size - 1, -1) and -1 <= start <= size - 1):
            raise PlanProblem(f"starts {start} and ends {end} with the step {step} reach outside an axis of {size}")


@op_check(ops.Split)
def _split(op: ops.Split, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    axis = axis_in("axis", op.axis, len(x.shape))
    non_negative("sizes", op.sizes)
    size = dim(x, axis) if x.shape else None
    if size is not None and sum(op.sizes) != size:
        raise PlanProblem(f"sizes {list(op.sizes)} add up to {sum(op.sizes)}, not the {size} of axis {op.axis}")


@op_check(ops.Expand)
def _expand(op: ops.Expand, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    if len(op.shape) < len(x.shape) or any(d < -1 for d in op.shape):
        raise PlanProblem(f"shape {list(op.shape)} must have at least the input's {len(x.shape)} dims, each >= 0")
    for value in op.shape:
        bounded("shape", value)


@op_check(ops.Tile)
def _tile(op: ops.Tile, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    length("repeats", op.repeats, len(x.shape), " (one per dim of the input)")
    non_negative("repeats", op.repeats)
    for value in op.repeats:
        bounded("repeats", value)


@op_check(ops.Pad)
def _pad(op: ops.Pad, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    rank = len(x.shape)
    length("pads", op.pads, 2 * rank, " (the begins, then the ends of every dim)")
    for value in op.pads:
        bounded("pads", value)
    for axis in range(rank):
        before, after, size = op.pads[axis], op.pads[rank + axis], dim(x, axis)
        if op.mode is ops.PaddingMode.CONSTANT:  # negative pads crop, but no more than the dim
            if size is not None and size + min(before, 0) + min(after, 0) < 0:
                raise PlanProblem(f"pads {list(op.pads)} crop more than the {size} of axis {axis}")
            continue
        non_negative("pads", op.pads)  # reflect, edge, wrap read positions inside the input
        if (before or after) and size == 0:
            raise PlanProblem(f"pads {list(op.pads)} pad axis {axis}, which is empty, in {op.mode.value} mode")


_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
                     "half_pixel_symmetric", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def check_resize(op, x: TensorSpec) -> None:
    """Resize and antialiased resize: one output size and one finite scale > 0 per dim, known modes, a roi for
    tf_crop_and_resize; a dim that grows from nothing has nothing to interpolate."""
    rank = len(x.shape)
    length("output_shape", op.output_shape, rank, " (one per dim of the input)")
    non_negative("output_shape", op.output_shape)
    length("scales", op.scales, rank, " (one per dim of the input)")
    if not all(math.isfinite(s) and s > 0 for s in op.scales):
        raise PlanProblem(f"scales {list(op.scales)} must be finite and > 0")
    one_of("coordinate_transformation", op.coordinate_transformation, _COORDINATE_MODES)
    finite("cubic_coeff_a", op.cubic_coeff_a)
    if op.coordinate_transformation == "tf_crop_and_resize":
        length("roi", op.roi, 2 * rank, " (the starts, then the ends of every dim)")
        if not all(math.isfinite(r) for r in op.roi):
            raise PlanProblem(f"roi {list(op.roi)} must be finite")
    largest = []
    for axis, out in enumerate(op.output_shape):
        bounded("output_shape", out)
        size = dim(x, axis)
        if size == 0 and out > 0:
            raise PlanProblem(f"output_shape {list(op.output_shape)} grows axis {axis}, which is empty")
        largest.append(None if size is None else max(size, out))
    buffer("the resize's intermediate results", largest, 8)


@op_check(ops.Resize)
def _resize(op: ops.Resize, inputs: Inputs) -> None:
    x = required(inputs, 0, "data")
    check_resize(op, x)
    one_of("nearest_mode", op.nearest_mode, _NEAREST_MODES)


@op_check(ops.Select)
def _select(op, inputs: Inputs) -> None:
    for index, what in enumerate(("condition", "then", "else")):
        required(inputs, index, f"{what} input")


@op_check(ops.Attention)
def _attention(op: ops.Attention, inputs: Inputs) -> None:
    q, k, v = (required(inputs, index, what) for index, what in enumerate(("queries", "keys", "values")))
    if op.has_mask:
        required(inputs, 3, "mask")
    if op.grouped_kv:  # the kernels read K/V head h * Hkv // Hq: Hkv must divide Hq
        if min(len(q.shape), len(k.shape), len(v.shape)) < 3:
            raise PlanProblem("grouped_kv needs queries, keys and values with a head dim (rank 3 or more)")
        heads, kv_heads = dim(q, -3), dim(k, -3)
        if dim(v, -3) != kv_heads or (heads is not None and kv_heads is not None
                                      and (kv_heads == 0 or heads % kv_heads)):
            raise PlanProblem(f"grouped_kv: keys and values must have one head count that divides the queries' "
                              f"{heads}, not {kv_heads} and {dim(v, -3)}")


@op_check(ops.FusedMatMul)
def _fused_matmul(op: ops.FusedMatMul, inputs: Inputs) -> None:
    required(inputs, 0, "left operand")
    required(inputs, 1, "right operand")
    check_epilogue(op, inputs)


@op_check(ops.FusedMatMulLayerNorm)
def _fused_matmul_layer_norm(op: ops.FusedMatMulLayerNorm, inputs: Inputs) -> None:
    at_most_inputs(inputs, 6)
    a, b = required(inputs, 0, "left operand"), required(inputs, 1, "right operand")
    if len(a.shape) < 1 or len(b.shape) != 2:
        raise PlanProblem(f"takes a of rank 1 or more and a 2-D b, not ranks {len(a.shape)} and {len(b.shape)}")
    _norm_scale_and_epsilon(op, inputs, 4)
    if op.residual:
        required(inputs, 3, "residual")


@op_check(ops.FusedAddLayerNorm)
def _fused_add_layer_norm(op: ops.FusedAddLayerNorm, inputs: Inputs) -> None:
    at_most_inputs(inputs, 4)
    x, addend = required(inputs, 0, "data"), required(inputs, 1, "addend")
    if len(x.shape) < 1 or len(addend.shape) > len(x.shape):
        raise PlanProblem(f"adds a rank-{len(addend.shape)} addend to rank-{len(x.shape)} data; it must broadcast")
    _norm_scale_and_epsilon(op, inputs, 2)


def _norm_scale_and_epsilon(op, inputs: Inputs, scale_index: int) -> None:
    """A fused layer that ends in a LayerNorm: its scale is present, its epsilon a finite number >= 0."""
    required(inputs, scale_index, "LayerNorm scale")
    finite("epsilon", op.epsilon)
    if op.epsilon < 0:
        raise PlanProblem(f"epsilon {op.epsilon!r} must be >= 0")


@op_check(ops.FusedPointwise)
def _fused_pointwise(op: ops.FusedPointwise, inputs: Inputs) -> None:
    from ..kernels.cpu.fused import parse_program, program_inputs

    try:
        parse_program(op.program)
    except ValueError as error:
        raise PlanProblem(str(error)) from None
    for instruction in parse_program(op.program)[0]:
        if isinstance(instruction.op, ops.Activation):
            check_activation(f"program instruction {instruction.target!r}:", instruction.op.type, instruction.op.alpha)
    needed = program_inputs(op.program)
    if not inputs or needed > len(inputs) or any(spec is None for spec in inputs):
        raise PlanProblem(f"program reads {needed} inputs, and the step gives {len(inputs)} (none may be null)")


needs_no_check("no attributes; shapes and dtypes are checked by shape inference", ops.Identity, ops.ParametricReLU,
               ops.MatrixMultiply)
needs_no_check("attributes are closed enums (checked when read) and floats any value of which computes",
               ops.Unary, ops.ElementWise, ops.Cast)


@op_check(ops.Activation)
def _activation(op: ops.Activation, inputs: Inputs) -> None:
    required(inputs, 0, "data")
    check_activation("activation", op.type, op.alpha)
needs_no_check("has no kernel: a constant is folded into the weights, so a step of it names no registered tactic",
               ops.Constant)

from . import op_checks_onnx  # noqa: E402,F401  (registers the checks of the remaining layer kinds)
