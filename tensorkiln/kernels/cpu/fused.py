"""Fused layers (made by passes/fuse_vertical.py and passes/fuse_pointwise.py): the reference semantics.

A fused producer computes  y = post_activation(activation(op(x) + bias) + residual)  with the activation a PReLU
where `prelu` is set. Every piece calls the same kernel as the unfused layer would, so fusing never changes what
a layer computes on the CPU; faster targets implement the same contract in one kernel.

A fused pointwise layer runs its `program` (see ops.FusedPointwise): a few lines of SSA text, parsed once per
distinct program into (output, kernel, op, operand names) tuples; nothing in it is ever evaluated as code.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from ...ir import ops
from ...ir.ops import ActivationType, ElementWiseOperation, UnaryOperation
from ..registry import kernel
from .activation import activation as activation_kernel
from .activation import parametric_relu, unary as unary_kernel
from .conv import convolution, deconvolution
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


def apply_epilogue(op, y: torch.Tensor, residual: torch.Tensor | None, slope: torch.Tensor | None) -> torch.Tensor:
    """The part after the producer and its bias: activation or PReLU, residual add, post activation. `y` must be a
    fresh tensor: the common activations and the residual add write into it."""
    if op.prelu:
        y = parametric_relu(None, [y, slope])[0]
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
    y = convolution(ops.Convolution(op.stride, op.pads, op.dilation, op.groups), [x, weight, bias])[0]
    return [apply_epilogue(op, y, residual, slope)]


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
