"""Binary element-wise ops (with their fused activations), comparisons, logical ops and unary math."""
from __future__ import annotations

import numpy as np

from ....ir.dtypes import DataType
from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import UnaryOperation as U
from ..registry import converter

# op name -> the IR operation (ADD, SUB, MUL and DIV carry a fused activation in their options)
BINARY = {
    "ADD": E.SUM, "SUB": E.SUB, "MUL": E.PROD, "DIV": E.DIV, "POW": E.POW, "MAXIMUM": E.MAX, "MINIMUM": E.MIN,
    "FLOOR_MOD": E.MOD, "EQUAL": E.EQUAL, "LESS": E.LESS, "LESS_EQUAL": E.LESS_OR_EQUAL, "GREATER": E.GREATER,
    "GREATER_EQUAL": E.GREATER_OR_EQUAL, "LOGICAL_AND": E.AND, "LOGICAL_OR": E.OR, "BITWISE_XOR": E.BITWISE_XOR,
    "RIGHT_SHIFT": E.BIT_SHIFT_RIGHT,
}
UNARY = {
    "ABS": U.ABS, "NEG": U.NEG, "EXP": U.EXP, "LOG": U.LOG, "SQRT": U.SQRT, "SIN": U.SIN, "COS": U.COS,
    "FLOOR": U.FLOOR, "CEIL": U.CEIL, "ROUND": U.ROUND, "SIGN": U.SIGN, "LOGICAL_NOT": U.NOT,
}


def binary(ctx, a, b, operation):
    return ctx.network.add_elementwise(a, b, operation, name=ctx.name).get_output(0)


def unary(ctx, x, operation):
    return ctx.network.add_unary(x, operation, name=ctx.name).get_output(0)


@converter(*BINARY)
def binary_op(ctx, op):
    return [ctx.fused_activation(binary(ctx, ctx.input(0), ctx.input(1), BINARY[op.op_name]))]


@converter("NOT_EQUAL")
def not_equal(ctx, op):
    return [unary(ctx, binary(ctx, ctx.input(0), ctx.input(1), E.EQUAL), U.NOT)]


@converter("SQUARED_DIFFERENCE")
def squared_difference(ctx, op):
    difference = binary(ctx, ctx.input(0), ctx.input(1), E.SUB)
    return [binary(ctx, difference, difference, E.PROD)]


@converter("FLOOR_DIV")
def floor_div(ctx, op):
    a, b = ctx.input(0), ctx.input(1)
    if a.dtype.is_floating:
        return [unary(ctx, binary(ctx, a, b, E.DIV), U.FLOOR)]
    # integers: the IR divides toward zero; step one down where the remainder's sign differs from the divisor's
    quotient = binary(ctx, a, b, E.DIV)
    remainder = binary(ctx, a, b, E.FMOD)
    zero = ctx.network.add_constant(None, np.zeros((), a.dtype.numpy), name=ctx.name + ".zero").get_output(0)
    nonzero = unary(ctx, binary(ctx, remainder, zero, E.EQUAL), U.NOT)
    signs_differ = binary(ctx, binary(ctx, remainder, zero, E.LESS), binary(ctx, b, zero, E.LESS), E.XOR)
    step = ctx.cast(binary(ctx, nonzero, signs_differ, E.AND), a.dtype)
    return [binary(ctx, quotient, step, E.SUB)]


@converter(*UNARY)
def unary_op(ctx, op):
    return [unary(ctx, ctx.input(0), UNARY[op.op_name])]


@converter("RSQRT")
def rsqrt(ctx, op):
    return [unary(ctx, unary(ctx, ctx.input(0), U.SQRT), U.RECIP)]


@converter("SQUARE")
def square(ctx, op):
    x = ctx.input(0)
    return [binary(ctx, x, x, E.PROD)]


@converter("ADD_N")
def add_n(ctx, op):
    total = ctx.input(0)
    for position in range(1, len(op.inputs)):
        total = binary(ctx, total, ctx.input(position), E.SUM)
    return [total]


@converter("ZEROS_LIKE")
def zeros_like(ctx, op):
    x = ctx.input(0)
    zeros = np.zeros(x.shape, dtype=x.dtype.numpy)
    return [ctx.network.add_constant(None, zeros, name=ctx.name).get_output(0)]


@converter("SELECT", "SELECT_V2")
def select(ctx, op):
    condition = ctx.cast(ctx.input(0), DataType.BOOL)
    return [ctx.network.add_select(condition, ctx.input(1), ctx.input(2), name=ctx.name).get_output(0)]
