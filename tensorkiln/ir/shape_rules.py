"""Closed-form output dtypes and shapes of the common layer kinds, for shape inference without PyTorch's meta device.

The meta device is the reference (ir/infer.py), but it is slow for a build: the first meta convolution imports sympy
and torch.fx's symbolic shapes, the first meta elementwise op torch._dynamo and with it torch.distributed (together
1.5-4 s of a build), and every call goes through PyTorch's reference decompositions (0.3-1 ms a layer). A rule here
computes what the meta device would report, from the formula, in microseconds.

A rule answers only where it is sure: the inputs are the ones the kernel takes in the ordinary case (same dtypes,
matching ranks and channels, positive output sizes, no dynamic dim). Anything else (an unusual dtype, a shape the
kernel would refuse) returns None, and the meta device decides, raising the kernel's own error where it is one.
tests/ir/test_shape_rules.py checks every rule against the meta device on many random configurations.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

from . import ops
from .dtypes import DataType

Shape = tuple[int, ...]
Result = list[tuple[DataType, Shape]] | None

# layer kind -> rule(op, inputs) -> [(dtype, shape) per output], or None to ask the meta device
SHAPE_RULES: dict[str, Callable[..., Result]] = {}


def shape_rule(*kinds: type[ops.OpAttrs]):
    def register(fn):
        for kind in kinds:
            if kind.KIND in SHAPE_RULES:
                raise ValueError(f"layer kind {kind.KIND!r} has two shape rules")
            SHAPE_RULES[kind.KIND] = fn
        return fn
    return register


def closed_form(op: ops.OpAttrs, inputs: Sequence) -> Result:
    """The (dtype, shape) of each output of `op` on `inputs` (anything with `.dtype`, a DataType, and `.shape`), or
    None where no rule is sure (then the meta device is the one to ask)."""
    rule = SHAPE_RULES.get(op.KIND)
    if rule is None or any(t is not None and any(d < 0 for d in t.shape) for t in inputs):
        return None  # (a negative dim is a dynamic one: the meta device probes it at two sizes)
    return rule(op, inputs)


# ---- helpers -------------------------------------------------------------------------------------------------
def broadcast(*shapes: Shape) -> Shape | None:
    """numpy's broadcast of `shapes`, or None where they do not broadcast."""
    rank = max(len(s) for s in shapes)
    out = []
    for index in range(rank):
        dims = {s[index - rank + len(s)] for s in shapes if index - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """torch.broadcast_shapes without its first call's cost: it runs torch._refs, which imports sympy and torch.fx's
    symbolic shapes (0.6 s, once per process: a build or a server start would pay it for one broadcast).
    RuntimeError where the shapes do not broadcast, as torch raises."""
    result = broadcast(*(tuple(int(d) for d in shape) for shape in shapes)) if shapes else ()
    if result is None:
        raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
    return result


def _floating(*tensors) -> bool:
    """Every tensor given is present, floating point, and of one dtype."""
    return all(t is not None for t in tensors) and len({t.dtype for t in tensors}) == 1 and tensors[0].dtype.is_floating


def _absent(inputs: Sequence, start: int) -> bool:
    return all(t is None for t in inputs[start:])


def _epilogue(op, y: Shape, dtype: DataType, inputs: Sequence, last: int = 5) -> Result:
    """A fused layer's output after its bias (inputs[2], added over the last dim; a (de)convolution's per channel,
    which its caller checked) and epilogue: the producer's shape `y`, where the bias and residual add nothing to it (the
    common case; others go to the meta device). Inputs from `last` on must be absent."""
    bias, residual, slope = (list(inputs) + [None] * 5)[2:5]
    if getattr(op, "int8_input_scale", 0.0) or getattr(op, "int8_output_scale", 0.0) or op.prelu or slope is not None:
        return None
    if op.KIND not in ("fused_convolution", "fused_deconvolution") and bias is not None and (
            bias.dtype is not dtype or broadcast(y, bias.shape) != y):
        return None
    if op.residual != (residual is not None) or (residual is not None and (
            residual.dtype is not dtype or tuple(residual.shape) != y)):
        return None
    if not _absent(inputs, last):
        return None
    return [(dtype, y)]


# ---- shape-preserving layers -------------------------------------------------------------------------------
@shape_rule(ops.Identity)
def _identity(op, inputs) -> Result:
    return [(inputs[0].dtype, tuple(inputs[0].shape))] if len(inputs) == 1 and inputs[0] is not None else None


@shape_rule(ops.Activation, ops.Softmax)
def _floating_same(op, inputs) -> Result:
    x = inputs[0]
    if len(inputs) != 1 or not _floating(x) or (op.KIND == "softmax" and not -len(x.shape) <= op.axis < len(x.shape)):
        return None
    if op.KIND == "softmax" and not x.shape:
        return None
    return [(x.dtype, tuple(x.shape))]


_TO_BOOL = {ops.UnaryOperation.ISNAN, ops.UnaryOperation.ISINF}
_INTEGER_ONLY = {ops.UnaryOperation.NOT, ops.UnaryOperation.BITWISE_NOT}


@shape_rule(ops.Unary)
def _unary(op, inputs) -> Result:
    x = inputs[0]
    if len(inputs) != 1 or not _floating(x) or op.operation in _INTEGER_ONLY:
        return None
    return [(DataType.BOOL if op.operation in _TO_BOOL else x.dtype, tuple(x.shape))]


@shape_rule(ops.LayerNorm, ops.RMSNorm)
def _norm(op, inputs) -> Result:
    x, *params = inputs
    if not _floating(x) or not x.shape or not -len(x.shape) <= op.axis < len(x.shape):
        return None
    normalized = tuple(x.shape[op.axis % len(x.shape):])
    for param in params:  # scale and shift expand to the normalized dims
        if param is not None and (param.dtype is not x.dtype or broadcast(normalized, param.shape) != normalized):
            return None
    return [(x.dtype, tuple(x.shape))]


# ---- elementwise ---------------------------------------------------------------------------------------------
E = ops.ElementWiseOperation
_ARITHMETIC = {E.SUM, E.SUB, E.PROD, E.DIV, E.MAX, E.MIN}
_COMPARISONS = {E.EQUAL, E.LESS, E.LESS_OR_EQUAL, E.GREATER, E.GREATER_OR_EQUAL}
_LOGICAL = {E.AND, E.OR, E.XOR}


@shape_rule(ops.ElementWise)
def _elementwise(op, inputs) -> Result:
    if len(inputs) != 2 or any(t is None for t in inputs) or inputs[0].dtype is not inputs[1].dtype:
        return None  # (mixed dtypes: PyTorch's type promotion, which the meta device knows)
    dtype, shape = inputs[0].dtype, broadcast(inputs[0].shape, inputs[1].shape)
    if shape is None:
        return None
    if op.operation in _ARITHMETIC and dtype is not DataType.BOOL:
        return [(dtype, shape)]
    if op.operation is E.POW and dtype.is_floating:
        return [(dtype, shape)]
    if op.operation in _COMPARISONS and dtype is not DataType.BOOL:
        return [(DataType.BOOL, shape)]
    if op.operation in _LOGICAL and dtype is DataType.BOOL:
        return [(DataType.BOOL, shape)]
    return None


@shape_rule(ops.Select)
def _select(op, inputs) -> Result:
    if len(inputs) != 3 or any(t is None for t in inputs):
        return None
    condition, then, otherwise = inputs
    if condition.dtype is not DataType.BOOL or then.dtype is not otherwise.dtype:
        return None
    shape = broadcast(condition.shape, then.shape, otherwise.shape)
    return None if shape is None else [(then.dtype, shape)]


class _Spec(NamedTuple):
    dtype: DataType
    shape: Shape


@shape_rule(ops.FusedPointwise)
def _fused_pointwise(op, inputs) -> Result:
    """Each instruction by its own kind's rule, in program order."""
    from ..kernels.cpu.fused import parse_program

    try:
        instructions, result = parse_program(op.program)
    except ValueError:
        return None  # (the kernel's error)
    values = {f"in{index}": t for index, t in enumerate(inputs)}
    for step in instructions:
        operands = [values.get(name) for name in step.operands]
        known = None if None in operands else closed_form(step.op, operands)
        if known is None:
            return None
        values[step.target] = _Spec(*known[0])
    out = values.get(result)
    return None if out is None else [(out.dtype, tuple(out.shape))]


# ---- convolution and pooling ---------------------------------------------------------------------------------
def _window_out(size: int, kernel: int, stride: int, begin: int, end: int, dilation: int, ceil: bool) -> int | None:
    """Output length of one spatial dim of a window op (ONNX's formula; a ceil-mode window that would start in the
    end padding is dropped), or None where it would be empty."""
    span = dilation * (kernel - 1) + 1
    padded = size + begin + end
    if padded < span:
        return None
    out = (-(-(padded - span) // stride) if ceil else (padded - span) // stride) + 1
    if ceil and (out - 1) * stride >= size + begin:
        out -= 1
    return out if out >= 1 else None


def _window_attrs_valid(rank: int, kernel, stride, pads, dilation) -> bool:
    return (len(kernel) == len(stride) == len(dilation) == rank and len(pads) == 2 * rank and rank in (1, 2, 3)
            and all(k >= 1 for k in kernel) and all(s >= 1 for s in stride) and all(d >= 1 for d in dilation)
            and all(p >= 0 for p in pads))


def _convolution_shape(op, x, weight, bias) -> Shape | None:
    spatial = len(x.shape) - 2
    if weight is None or len(weight.shape) != spatial + 2 or op.groups < 1:
        return None
    if not _window_attrs_valid(spatial, weight.shape[2:], op.stride, op.pads, op.dilation):
        return None
    maps, channels = weight.shape[0], weight.shape[1]
    if x.shape[1] != channels * op.groups or maps % op.groups or maps == 0:
        return None
    if bias is not None and (bias.dtype is not x.dtype or tuple(bias.shape) != (maps,)):
        return None
    sizes = [_window_out(x.shape[2 + i], weight.shape[2 + i], op.stride[i], op.pads[i], op.pads[spatial + i],
                         op.dilation[i], False) for i in range(spatial)]
    return None if None in sizes else (x.shape[0], maps, *sizes)


def _deconvolution_shape(op, x, weight, bias) -> Shape | None:
    """Full transposed convolution, output padding at the end, then the pads cropped (kernels/cpu/conv.py)."""
    spatial = len(x.shape) - 2
    if weight is None or len(weight.shape) != spatial + 2 or op.groups < 1 or len(op.output_padding) != spatial:
        return None
    if not _window_attrs_valid(spatial, weight.shape[2:], op.stride, op.pads, op.dilation) or \
            any(p < 0 for p in op.output_padding):
        return None
    channels, maps = weight.shape[0], weight.shape[1] * op.groups
    if x.shape[1] != channels or channels % op.groups or maps == 0:
        return None
    if bias is not None and (bias.dtype is not x.dtype or tuple(bias.shape) != (maps,)):
        return None
    sizes = [(x.shape[2 + i] - 1) * op.stride[i] + op.dilation[i] * (weight.shape[2 + i] - 1) + 1
             + op.output_padding[i] - op.pads[i] - op.pads[spatial + i] for i in range(spatial)]
    if any(x.shape[2 + i] < 1 or size < 1 for i, size in enumerate(sizes)):
        return None
    return (x.shape[0], maps, *sizes)


def _producer_rule(shape_of: Callable, fused: bool) -> Callable[..., Result]:
    """The rule of a (fused) convolution or deconvolution: x, weight, bias, and a fused kind's epilogue inputs."""
    def rule(op, inputs) -> Result:
        x, weight, bias = (list(inputs) + [None] * 3)[:3]
        if not _floating(x, weight) or len(x.shape) not in (3, 4, 5) or (not fused and len(inputs) > 3):
            return None
        shape = shape_of(op, x, weight, bias)
        if shape is None:
            return None
        return _epilogue(op, shape, x.dtype, inputs) if fused else [(x.dtype, shape)]
    return rule


shape_rule(ops.Convolution)(_producer_rule(_convolution_shape, fused=False))
shape_rule(ops.FusedConvolution)(_producer_rule(_convolution_shape, fused=True))
shape_rule(ops.Deconvolution)(_producer_rule(_deconvolution_shape, fused=False))
shape_rule(ops.FusedDeconvolution)(_producer_rule(_deconvolution_shape, fused=True))


@shape_rule(ops.Pooling)
def _pooling(op, inputs) -> Result:
    x = inputs[0]
    if len(inputs) != 1 or not _floating(x) or len(x.shape) not in (3, 4, 5):
        return None
    spatial = len(x.shape) - 2
    if not _window_attrs_valid(spatial, op.kernel, op.stride, op.pads, op.dilation):
        return None
    if op.type is ops.PoolingType.LP and op.p < 1:
        return None
    sizes = [_window_out(x.shape[2 + i], op.kernel[i], op.stride[i], op.pads[i], op.pads[spatial + i],
                        op.dilation[i], op.ceil_mode) for i in range(spatial)]
    if None in sizes:
        return None
    # the kernel pads (or crops) the input to exactly the windows' extent: a crop of more than the input is its error
    if any((out - 1) * op.stride[i] + op.dilation[i] * (op.kernel[i] - 1) + 1 < op.pads[i]
           for i, out in enumerate(sizes)):
        return None
    return [(x.dtype, (*x.shape[:2], *sizes))]


@shape_rule(ops.GlobalPooling)
def _global_pooling(op, inputs) -> Result:
    x = inputs[0]
    if len(inputs) != 1 or not _floating(x) or len(x.shape) < 3 or 0 in x.shape[2:]:
        return None
    return [(x.dtype, (*x.shape[:2], *(1,) * (len(x.shape) - 2)))]


# ---- matrix products -----------------------------------------------------------------------------------------
def _matmul_shape(a, b, transpose_a: bool, transpose_b: bool) -> Shape | None:
    if len(a.shape) < 2 or len(b.shape) < 2:
        return None  # (vectors: matmul's own rules, which the meta device knows)
    rows, inner = (a.shape[-1], a.shape[-2]) if transpose_a else (a.shape[-2], a.shape[-1])
    inner_b, columns = (b.shape[-1], b.shape[-2]) if transpose_b else (b.shape[-2], b.shape[-1])
    batch = broadcast(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
    if inner != inner_b or batch is None:
        return None
    return (*batch, rows, columns)


@shape_rule(ops.MatrixMultiply)
def _matrix_multiply(op, inputs) -> Result:
    if len(inputs) != 2 or not _floating(*inputs):
        return None
    shape = _matmul_shape(inputs[0], inputs[1], op.transpose_a, op.transpose_b)
    return None if shape is None else [(inputs[0].dtype, shape)]


@shape_rule(ops.FusedMatMul)
def _fused_matmul(op, inputs) -> Result:
    a, b = (list(inputs) + [None])[:2]
    if not _floating(a, b):
        return None
    shape = _matmul_shape(a, b, op.transpose_a, op.transpose_b)
    return None if shape is None else _epilogue(op, shape, a.dtype, inputs)


@shape_rule(ops.FusedMatMulLayerNorm)
def _fused_matmul_layer_norm(op, inputs) -> Result:
    a, b, _, _, scale, shift = (list(inputs) + [None] * 6)[:6]
    if not _floating(a, b) or scale is None:
        return None
    shape = _matmul_shape(a, b, False, op.transpose_b)
    if shape is None or any(p is not None and (p.dtype is not a.dtype or broadcast(shape[-1:], p.shape) != shape[-1:])
                            for p in (scale, shift)):
        return None
    plain = ops.FusedMatMul(transpose_b=op.transpose_b, residual=op.residual)  # the product and its residual add
    return _epilogue(plain, shape, a.dtype, inputs[:4])


@shape_rule(ops.FusedAddLayerNorm)
def _fused_add_layer_norm(op, inputs) -> Result:
    x, addend, scale, shift = (list(inputs) + [None] * 4)[:4]
    if len(inputs) > 4 or not _floating(x, addend, scale) or not x.shape or \
            broadcast(x.shape, addend.shape) != tuple(x.shape):
        return None
    width = tuple(x.shape[-1:])  # the norm's scale and shift expand to the last dim
    if any(p is not None and (p.dtype is not x.dtype or broadcast(width, p.shape) != width) for p in (scale, shift)):
        return None
    return [(x.dtype, tuple(x.shape))]


@shape_rule(ops.FullyConnected)
def _fully_connected(op, inputs) -> Result:
    x, weight, bias = (list(inputs) + [None])[:3]
    if len(inputs) > 3 or not _floating(x, weight) or len(weight.shape) != 2 or not 0 <= op.axis < len(x.shape):
        return None
    if math.prod(x.shape[op.axis:]) != weight.shape[1]:
        return None
    if bias is not None and (bias.dtype is not x.dtype or tuple(bias.shape) != (weight.shape[0],)):
        return None
    return [(x.dtype, (*x.shape[:op.axis], weight.shape[0]))]


@shape_rule(ops.Attention)
def _attention(op, inputs) -> Result:
    q, k, v, mask = (list(inputs) + [None])[:4]
    if len(inputs) > 4 or not _floating(q, k, v) or op.grouped_kv or len(q.shape) < 2:
        return None
    if not (len(q.shape) == len(k.shape) == len(v.shape)) or q.shape[:-2] != k.shape[:-2] or \
            k.shape[:-2] != v.shape[:-2] or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        return None
    scores = (*q.shape[:-1], k.shape[-2])
    if op.has_mask != (mask is not None) or (mask is not None and (
            mask.dtype not in (q.dtype, DataType.BOOL) or broadcast(scores, mask.shape) != scores)):
        return None
    if 0 in scores or v.shape[-1] == 0:
        return None
    return [(q.dtype, (*q.shape[:-1], v.shape[-1]))]


# ---- data movement -------------------------------------------------------------------------------------------
def _is_permutation(order, rank: int) -> bool:
    return sorted(order) == list(range(rank))


@shape_rule(ops.Shuffle)
def _shuffle(op, inputs) -> Result:
    x = inputs[0]
    if len(inputs) != 1 or x is None:
        return None
    shape = tuple(x.shape)
    if op.first_transpose is not None:
        if not _is_permutation(op.first_transpose, len(shape)):
            return None
        shape = tuple(shape[i] for i in op.first_transpose)
    if op.reshape_dims is not None:
        dims = tuple(op.reshape_dims)
        if any(d < 0 for d in dims) or math.prod(dims) != math.prod(shape):
            return None
        shape = dims
    if op.second_transpose is not None:
        if not _is_permutation(op.second_transpose, len(shape)):
            return None
        shape = tuple(shape[i] for i in op.second_transpose)
    return [(x.dtype, shape)]


@shape_rule(ops.Concatenation)
def _concatenation(op, inputs) -> Result:
    if not inputs or any(t is None for t in inputs) or len({t.dtype for t in inputs}) != 1:
        return None
    rank = len(inputs[0].shape)
    if rank == 0 or any(len(t.shape) != rank for t in inputs) or not -rank <= op.axis < rank:
        return None
    axis = op.axis % rank
    if any(t.shape[:axis] != inputs[0].shape[:axis] or t.shape[axis + 1:] != inputs[0].shape[axis + 1:]
           for t in inputs):
        return None
    shape = list(inputs[0].shape)
    shape[axis] = sum(t.shape[axis] for t in inputs)
    return [(inputs[0].dtype, tuple(shape))]


@shape_rule(ops.Split)
def _split(op, inputs) -> Result:
    x = inputs[0]
    if len(inputs) != 1 or x is None or not x.shape or not -len(x.shape) <= op.axis < len(x.shape):
        return None
    axis = op.axis % len(x.shape)
    if not op.sizes or any(s < 0 for s in op.sizes) or sum(op.sizes) != x.shape[axis]:
        return None
    return [(x.dtype, (*x.shape[:axis], size, *x.shape[axis + 1:])) for size in op.sizes]


@shape_rule(ops.Gather)
def _gather(op, inputs) -> Result:
    if len(inputs) != 2 or any(t is None for t in inputs):
        return None
    data, indices = inputs
    if indices.dtype not in (DataType.INT64, DataType.INT32) or not data.shape:
        return None
    if not -len(data.shape) <= op.axis < len(data.shape):
        return None
    axis = op.axis % len(data.shape)
    if data.shape[axis] == 0 and math.prod(indices.shape):
        return None  # (no index is valid: the kernel's error)
    return [(data.dtype, (*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]))]


@shape_rule(ops.GatherElements)
def _gather_elements(op, inputs) -> Result:
    if len(inputs) != 2 or any(t is None for t in inputs):
        return None
    data, indices = inputs
    rank = len(data.shape)
    if indices.dtype not in (DataType.INT64, DataType.INT32) or rank == 0 or len(indices.shape) != rank:
        return None
    if not -rank <= op.axis < rank or (data.shape[op.axis % rank] == 0 and math.prod(indices.shape)):
        return None
    if any(i > d for axis, (i, d) in enumerate(zip(indices.shape, data.shape)) if axis != op.axis % rank):
        return None  # (torch.gather takes index dims up to data's; the meta device reports what it refuses)
    return [(data.dtype, tuple(indices.shape))]


@shape_rule(ops.Cast)
def _cast(op, inputs) -> Result:
    if len(inputs) != 1 or inputs[0] is None:
        return None
    return [(op.to, tuple(inputs[0].shape))]


@shape_rule(ops.Expand)
def _expand(op, inputs) -> Result:
    x = inputs[0]
    target = tuple(op.shape)
    if len(inputs) != 1 or x is None or len(target) < len(x.shape) or any(d < 0 for d in target):
        return None
    padded = (1,) * (len(target) - len(x.shape)) + tuple(x.shape)
    if any(have not in (1, want) for have, want in zip(padded, target)):
        return None
    return [(x.dtype, target)]
