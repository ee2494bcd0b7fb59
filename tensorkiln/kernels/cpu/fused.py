"""Fused layers (made by passes/fuse_vertical.py and passes/fuse_pointwise.py): the reference semantics.

A fused producer computes  y = post_activation(activation(op(x) + bias) + residual)  with the activation a PReLU
where `prelu` is set. The producer is the unfused layer's kernel (on NHWC inputs, a convolution runs through oneDNN
with its weight packed once instead); the epilogue works in place on the producer's fresh result, with the
activation kernels' semantics. Faster targets implement the same contract in one kernel.

A fused pointwise layer runs its `program` (see ops.FusedPointwise): a few lines of SSA text, parsed once per
distinct program into (output, kernel, op, operand names) tuples; nothing in it is ever evaluated as code.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import ActivationType, ElementWiseOperation, UnaryOperation
from ..registry import kernel
from .activation import activation as activation_kernel
from .activation import parametric_relu, unary as unary_kernel
from .conv import convolution, deconvolution, split_pads
from .elementwise import elementwise as elementwise_kernel
from .linalg import matrix_multiply


def _activate(type_: ActivationType | None, alpha: float, beta: float, y: torch.Tensor) -> torch.Tensor:
    """The activation, in place for the common ones (`y` is always a fresh result the kernel owns)."""
    if type_ is ActivationType.RELU:
        return y.relu_()
    if type_ is ActivationType.CLIP and y.is_floating_point():
        return y.clamp_(alpha, beta)
    return y if type_ is None else activation_kernel(ops.Activation(type_, alpha, beta), [y])[0]


def _add(y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    # in place where nothing is promoted or broadcast to a larger shape: saves a pass over memory per layer
    if other.dtype == y.dtype and torch.broadcast_shapes(y.shape, other.shape) == y.shape:
        return y.add_(other)
    return y + other


def _per_channel(y: torch.Tensor, slope: torch.Tensor) -> bool:
    """Whether `slope`, broadcast numpy-style against y [N, C, ...], holds one value per channel (or one in all)."""
    if slope.dim() > y.dim() or y.dim() < 2 or slope.dtype != y.dtype:
        return False
    shape = (1,) * (y.dim() - slope.dim()) + tuple(slope.shape)
    return all(d == 1 for i, d in enumerate(shape) if i != 1) and shape[1] in (1, y.shape[1])


def _prelu(y: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    if _per_channel(y, slope):
        return F.prelu(y, slope.reshape(-1))  # torch's own kernel: one pass, no temporaries
    return parametric_relu(None, [y, slope])[0]


def apply_epilogue(op, y: torch.Tensor, residual: torch.Tensor | None, slope: torch.Tensor | None) -> torch.Tensor:
    """The part after the producer and its bias: activation or PReLU, residual add, post activation. `y` must be a
    fresh tensor: the common activations and the residual add write into it."""
    if op.prelu:
        y = _prelu(y, slope)
    else:
        y = _activate(op.activation, op.alpha, op.beta, y)
    if op.residual:
        y = _add(y, residual)
    return _activate(op.post_activation, op.post_alpha, op.post_beta, y)


def _five(inputs) -> list:
    return (list(inputs) + [None] * 5)[:5]


@kernel(ops.FusedConvolution)
def fused_convolution(op: ops.FusedConvolution, inputs):
    x, weight, bias, residual, slope = _five(inputs)
    relu_inside = op.activation is ActivationType.RELU and not op.prelu  # oneDNN applies it as it writes
    y = _onednn_convolution(op, x, weight, bias, "relu" if relu_inside else "none")
    if y is None:
        y = convolution(ops.Convolution(op.stride, op.pads, op.dilation, op.groups), [x, weight, bias])[0]
    elif relu_inside:
        op = dataclasses.replace(op, activation=None)
    return [apply_epilogue(op, y, residual, slope)]


# ---- the CPU fast path: oneDNN with the weight packed once ----------------------------------------------------
_PACKED = "_tensorkiln_onednn_packed"  # attribute of a weight tensor: {(input shape, conv params): packed weight}


@functools.cache
def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _onednn_convolution(op, x, weight, bias, attr: str) -> torch.Tensor | None:
    """A 2-D FP32 convolution of an NHWC (channels-last) input on the CPU by oneDNN, with the weight reordered into
    oneDNN's blocked layout once per input shape (F.conv2d reorders it on every call; onnxruntime's MLAS likewise
    packs its weights once); the result is NHWC too. The packed copy is kept on the weight tensor, so it lives
    exactly as long as the engine's weights (and doubles their memory). None where this path does not apply: NCHW
    inputs (an engine runs NHWC when its plan says channels_last), other devices, dtypes or ranks, asymmetric pads,
    autograd; the plain torch convolution runs instead. The results agree with it to float32 rounding."""
    begin, end = split_pads(op.pads)
    floats = all(t is None or t.dtype is torch.float32 for t in (x, weight, bias))
    if x.device.type != "cpu" or x.dim() != 4 or begin != end or not floats or torch.is_grad_enabled():
        return None
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last) or not _onednn_available():
        return None
    key = (tuple(x.shape), op.stride, begin, op.dilation, op.groups)
    packed = getattr(weight, _PACKED, None)
    if packed is None:
        packed = {}
        setattr(weight, _PACKED, packed)
    if key not in packed:
        packed[key] = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.contiguous().to_mkldnn(), list(begin), list(op.stride), list(op.dilation), op.groups, list(x.shape))
    return torch.ops.mkldnn._convolution_pointwise(x, packed[key], bias, list(begin), list(op.stride),
                                                   list(op.dilation), op.groups, attr, [], "")


@kernel(ops.FusedDeconvolution)
def fused_deconvolution(op: ops.FusedDeconvolution, inputs):
    x, weight, bias, residual, slope = _five(inputs)
    plain = ops.Deconvolution(op.stride, op.pads, op.dilation, op.output_padding, op.groups)
    y = deconvolution(plain, [x, weight, bias])[0]
    return [apply_epilogue(op, y, residual, slope)]


@kernel(ops.FusedMatMul)
def fused_matmul(op: ops.FusedMatMul, inputs):
    a, b, bias, residual, slope = _five(inputs)
    y = matrix_multiply(ops.MatrixMultiply(op.transpose_a, op.transpose_b), [a, b])[0]
    if bias is not None:
        y = _add(y, bias)  # broadcast over the last dim
    return [apply_epilogue(op, y, residual, slope)]


# ---- fused pointwise programs ------------------------------------------------------------------------------
class Instruction(NamedTuple):
    target: str
    fn: object  # a kernel: fn(op, inputs) -> [tensor]
    op: ops.OpAttrs
    operands: tuple[str, ...]


_BINARY = {e.value: e for e in ElementWiseOperation}
_UNARY = {u.value: u for u in UnaryOperation}
_ACTIVATIONS = {a.value: a for a in ActivationType}


def _instruction(line: str) -> Instruction:
    target, sep, rest = (part.strip() for part in line.partition("="))
    words = rest.split()
    if not sep or not target or not words:
        raise ValueError(f"fused pointwise instruction {line!r} is not of the form 'name = opcode operands'")
    opcode, args = words[0], tuple(words[1:])
    if opcode in _BINARY and len(args) == 2:
        return Instruction(target, elementwise_kernel, ops.ElementWise(_BINARY[opcode]), args)
    if opcode in _UNARY and len(args) == 1:
        return Instruction(target, unary_kernel, ops.Unary(_UNARY[opcode]), args)
    if opcode in _ACTIVATIONS and len(args) in (1, 3):
        alpha, beta = (float(args[1]), float(args[2])) if len(args) == 3 else (0.0, 0.0)
        return Instruction(target, activation_kernel, ops.Activation(_ACTIVATIONS[opcode], alpha, beta), args[:1])
    raise ValueError(f"fused pointwise instruction {line!r}: unknown opcode {opcode!r} or wrong operand count")


@functools.lru_cache(maxsize=4096)
def parse_program(program: tuple[str, ...]) -> tuple[tuple[Instruction, ...], str]:
    """(instructions, name of the result) of a program whose last line is `out = NAME`."""
    if not program:
        raise ValueError("fused pointwise program is empty")
    target, sep, result = (part.strip() for part in program[-1].partition("="))
    if target != "out" or not sep or len(result.split()) != 1:
        raise ValueError(f"fused pointwise program must end with 'out = NAME', not {program[-1]!r}")
    instructions = tuple(_instruction(line) for line in program[:-1])
    defined = {i.target for i in instructions}
    if result not in defined and not result.startswith("in"):
        raise ValueError(f"fused pointwise program returns {result!r}, which it never defines")
    return instructions, result


@kernel(ops.FusedPointwise)
def fused_pointwise(op: ops.FusedPointwise, inputs):
    instructions, result = parse_program(op.program)
    env = {f"in{i}": t for i, t in enumerate(inputs)}
    for step in instructions:
        try:
            operands = [env[name] for name in step.operands]
        except KeyError as missing:
            raise ValueError(f"fused pointwise program reads {missing.args[0]!r} before it is defined") from None
        env[step.target] = step.fn(step.op, operands)[0]
    return [env[result]]
