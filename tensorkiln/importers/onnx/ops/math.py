"""Elementwise math: binary operators with broadcasting, variadic Sum/Mean/Max/Min, unary functions,
comparisons, logic, Where."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import UnaryOperation as U
from ..registry import converter

_BINARY = {
    "Add": E.SUM, "Sub": E.SUB, "Mul": E.PROD, "Div": E.DIV, "Pow": E.POW, "Equal": E.EQUAL, "Less": E.LESS,
    "LessOrEqual": E.LESS_OR_EQUAL, "Greater": E.GREATER, "GreaterOrEqual": E.GREATER_OR_EQUAL, "And": E.AND,
    "Or": E.OR, "Xor": E.XOR, "BitwiseAnd": E.BITWISE_AND, "BitwiseOr": E.BITWISE_OR, "BitwiseXor": E.BITWISE_XOR,
}
_VARIADIC = {"Sum": E.SUM, "Max": E.MAX, "Min": E.MIN, "Mean": E.SUM}
_UNARY = {
    "Sqrt": U.SQRT, "Exp": U.EXP, "Log": U.LOG, "Neg": U.NEG, "Abs": U.ABS, "Reciprocal": U.RECIP, "Erf": U.ERF,
    "Floor": U.FLOOR, "Ceil": U.CEIL, "Round": U.ROUND, "Sign": U.SIGN, "Not": U.NOT, "Sin": U.SIN, "Cos": U.COS,
    "Tan": U.TAN, "Asin": U.ASIN, "Acos": U.ACOS, "Atan": U.ATAN, "Sinh": U.SINH, "Cosh": U.COSH,
    "Asinh": U.ASINH, "Acosh": U.ACOSH, "Atanh": U.ATANH, "IsNaN": U.ISNAN, "BitwiseNot": U.BITWISE_NOT,
}


@converter(*_BINARY)
def binary(ctx, node):
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    return [ctx.network.add_elementwise(a, b, _BINARY[node.op_type], name=ctx.name(node)).get_output(0)]


@converter(*_VARIADIC)
def variadic(ctx, node):
    operands = ctx.inputs(node)
    result = operands[0]
    for operand in operands[1:]:
        result = ctx.network.add_elementwise(result, operand, _VARIADIC[node.op_type], name=ctx.name(node)).get_output(0)
    if node.op_type == "Mean" and len(operands) > 1:
        count = ctx.network.add_constant((), np.array(len(operands), dtype=result.dtype.numpy)).get_output(0)
        result = ctx.network.add_elementwise(result, count, E.DIV, name=ctx.name(node)).get_output(0)
    elif len(operands) == 1:
        result = ctx.network.add_identity(result, name=ctx.name(node)).get_output(0)
    return [result]


@converter("Mod")
def mod(ctx, node):
    operation = E.FMOD if ctx.attr(node, "fmod", 0) else E.MOD
    return [ctx.network.add_elementwise(ctx.input(node, 0), ctx.input(node, 1), operation,
                                        name=ctx.name(node)).get_output(0)]


@converter("BitShift")
def bit_shift(ctx, node):
    operation = E.BIT_SHIFT_LEFT if ctx.attr(node, "direction") == "LEFT" else E.BIT_SHIFT_RIGHT
    return [ctx.network.add_elementwise(ctx.input(node, 0), ctx.input(node, 1), operation,
                                        name=ctx.name(node)).get_output(0)]


@converter(*_UNARY)
def unary(ctx, node):
    return [ctx.network.add_unary(ctx.input(node, 0), _UNARY[node.op_type], name=ctx.name(node)).get_output(0)]


@converter("IsInf")
def is_inf(ctx, node):
    x = ctx.input(node, 0)
    positive, negative = ctx.attr(node, "detect_positive", 1), ctx.attr(node, "detect_negative", 1)
    infinite = ctx.network.add_unary(x, U.ISINF, name=ctx.name(node)).get_output(0)
    if positive and negative:
        return [infinite]
    zero = ctx.network.add_constant((), np.array(0, dtype=x.dtype.numpy)).get_output(0)
    # neither sign detected: compare with a sign nothing has (x > 0 and x < 0 is never true)
    sign = E.GREATER if positive else E.LESS
    signed = ctx.network.add_elementwise(x, zero, sign, name=ctx.name(node)).get_output(0)
    if not (positive or negative):
        signed = ctx.network.add_elementwise(signed, ctx.network.add_elementwise(x, zero, E.GREATER).get_output(0),
                                             E.AND, name=ctx.name(node)).get_output(0)
    return [ctx.network.add_elementwise(infinite, signed, E.AND, name=ctx.name(node)).get_output(0)]


@converter("Where")
def where(ctx, node):
    condition, then, otherwise = (ctx.input(node, i) for i in range(3))
    return [ctx.network.add_select(condition, then, otherwise, name=ctx.name(node)).get_output(0)]
