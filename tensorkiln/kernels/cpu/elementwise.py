"""Binary elementwise operations with broadcasting, select (where), and scale."""
from __future__ import annotations

import torch

from ...errors import InputError
from ...ir import ops
from ...ir.ops import ElementWiseOperation as E
from ...ir.ops import ScaleMode
from ..registry import kernel


def _div(a, b):
    if a.is_floating_point() or b.is_floating_point():
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer Div truncates toward zero


def _pow(a, b):
    # ONNX Pow keeps the base's dtype even when the exponent is of another type.
    return torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b).to(a.dtype)


_BINARY = {
    E.SUM: torch.add, E.SUB: torch.sub, E.PROD: torch.mul, E.DIV: _div, E.POW: _pow,
    E.MAX: torch.maximum, E.MIN: torch.minimum, E.EQUAL: torch.eq, E.LESS: torch.lt,
    E.LESS_OR_EQUAL: torch.le, E.GREATER: torch.gt, E.GREATER_OR_EQUAL: torch.ge,
    E.AND: torch.logical_and, E.OR: torch.logical_or, E.XOR: torch.logical_xor,
    E.MOD: torch.remainder, E.FMOD: torch.fmod, E.BITWISE_AND: torch.bitwise_and,
    E.BITWISE_OR: torch.bitwise_or, E.BITWISE_XOR: torch.bitwise_xor,
    E.BIT_SHIFT_LEFT: torch.bitwise_left_shift, E.BIT_SHIFT_RIGHT: torch.bitwise_right_shift,
}


_INTEGER_DIVISIONS = {E.DIV: "Div", E.MOD: "Mod", E.FMOD: "Mod"}


@kernel(ops.ElementWise)
def elementwise(op: ops.ElementWise, inputs):
    a, b = inputs
    if (op.operation in _INTEGER_DIVISIONS and not (a.is_floating_point() or b.is_floating_point())
            and not b.is_meta and b.numel() and bool((b == 0).any())):
        # torch raises a bare ZeroDivisionError RuntimeError; an integer divisor of 0 is the caller's data (a float
        # one gives inf or nan, as ONNX says), and onnxruntime refuses it too
        raise InputError(f"{_INTEGER_DIVISIONS[op.operation]}: integer division by zero (the divisor {tuple(b.shape)} "
                         f"of {b.dtype} holds a 0); give nonzero divisors or divide in floating point")
    return [_BINARY[op.operation](a, b)]


@kernel(ops.Select)
def select(op, inputs):
    condition, then, otherwise = inputs
    return [torch.where(condition, then, otherwise)]


def _coefficient(value, x, op: ops.Scale):
    if op.mode is ScaleMode.CHANNEL:
        axis = op.channel_axis % x.dim()
        return value.reshape((-1,) + (1,) * (x.dim() - axis - 1))
    return value


@kernel(ops.Scale)
def scale(op: ops.Scale, inputs):
    x, scale_value, shift, power = (list(inputs) + [None] * 3)[:4]
    y = x
    if scale_value is not None:
        y = y * _coefficient(scale_value, x, op)
    if shift is not None:
        y = y + _coefficient(shift, x, op)
    if power is not None:
        y = y ** _coefficient(power, x, op)
    return [y]
