"""Elementwise math against onnxruntime: binary ops with broadcasting, variadic ops, unary functions,
comparisons, logic, bitwise ops, Mod, BitShift, IsInf, IsNaN, Where."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, positive, rand

# (lhs shape, rhs shape): scalars, size-1 dims, primes, non-multiples of 8, rank-changing broadcasts
BROADCASTS = [((7,), (7,)), ((2, 13, 1), (5,)), ((1,), (3, 1, 11)), ((), (6, 7)), ((1, 1, 9), (3, 1, 1))]


@pytest.mark.parametrize("lhs, rhs", BROADCASTS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arithmetic_broadcasts(op, lhs, rhs):
    check(op, [rand(*lhs, seed=1), positive(*rhs, seed=2)], opset=14)


@pytest.mark.parametrize("opset", [7, 13, 14])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arithmetic_across_opsets_with_a_constant_operand(op, opset):
    check(op, [rand(3, 1, 5), Const(positive(4, 1, seed=3))], opset=opset)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
def test_integer_arithmetic(op, dtype):
    check(op, [rand(5, 7, dtype=dtype, low=-50, high=50), rand(7, dtype=dtype, low=-50, high=50, seed=4)])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_division_truncates_toward_zero(dtype):
    lhs = np.array([7, -7, 7, -7, 9, -1, 0, 13], dtype=dtype)
    rhs = np.array([2, 2, -2, -2, 3, 4, 5, -5], dtype=dtype)
    check("Div", [lhs, rhs])


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("op", ["Add", "Mul", "Div"])
def test_arithmetic_in_other_float_types(op, dtype):
    check(op, [rand(3, 13, dtype=dtype), positive(13, dtype=dtype, seed=5)])


@pytest.mark.parametrize("lhs, rhs", [((7,), (7,)), ((2, 13, 1), (5,)), ((), (9,))])
def test_pow_broadcasts(lhs, rhs):
    check("Pow", [positive(*lhs), rand(*rhs, seed=6)], opset=15)


@pytest.mark.parametrize("exponent_dtype", [np.float32, np.int64, np.int32])
def test_pow_with_an_exponent_of_another_type(exponent_dtype):
    check("Pow", [rand(3, 5), Const(np.array([2, 3, 1, 0, 2], dtype=exponent_dtype))], opset=15)


@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_comparisons_broadcast(op, dtype):
    lhs = rand(2, 7, 1, dtype=dtype, low=-3, high=3)
    rhs = rand(5, dtype=dtype, low=-3, high=3, seed=8)
    if dtype == np.float32:  # some exact ties, so Equal and the *OrEqual forms see both cases
        lhs, rhs = np.round(lhs), np.round(rhs)
    check(op, [lhs, rhs], opset=16)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic_broadcasts(op):
    check(op, [rand(3, 1, 7, dtype=np.bool_), rand(4, 1, dtype=np.bool_, seed=9)])


def test_not():
    check("Not", [rand(13, 3, dtype=np.bool_)])


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise_binary(op, dtype):
    low = 0 if dtype == np.uint8 else -100
    check(op, [rand(3, 7, dtype=dtype, low=low, high=100), rand(7, dtype=dtype, low=low, high=100, seed=3)], opset=18)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_bitwise_not(dtype):
    check("BitwiseNot", [rand(5, 3, dtype=dtype, low=0, high=200)], opset=18)


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bit_shift(direction):
    check("BitShift", [rand(3, 7, dtype=np.uint8, low=0, high=255), rand(7, dtype=np.uint8, low=0, high=8, seed=2)],
          opset=11, direction=direction)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
def test_variadic_ops_broadcast(op, count):
    shapes = [(3, 1, 7), (5, 1), (7,)][:count]
    check(op, [rand(*s, seed=i) for i, s in enumerate(shapes)], opset=13)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_variadic_min_max_on_integers(op):
    check(op, [rand(4, 7, dtype=np.int64, low=-9, high=9), rand(7, dtype=np.int64, low=-9, high=9, seed=1)], opset=13)


@pytest.mark.parametrize("op", ["Sum", "Max", "Mean"])
def test_variadic_ops_at_opset_7(op):
    check(op, [rand(2, 7, seed=1), rand(2, 7, seed=2)], opset=7)


@pytest.mark.parametrize("fmod, dtype", [(1, np.float32), (0, np.int32), (1, np.int32), (0, np.int64), (1, np.int64)])
def test_mod_signs(fmod, dtype):  # ONNX requires fmod=1 for floating-point inputs
    if dtype != np.float32 and not fmod:
        lhs = np.array([7, -7, 7, -7, 13, -13, 0, 5], dtype=dtype)
        rhs = np.array([3, 3, -3, -3, 5, 4, 7, -11], dtype=dtype)
    else:
        lhs = rand(2, 13, dtype=dtype, low=-20, high=20)
        rhs = np.where(rand(13, seed=3, dtype=np.float32) > 0, 3, -7).astype(dtype)
        if dtype == np.float32:
            rhs = rhs * np.float32(1.5)
    check("Mod", [lhs, rhs], opset=13, fmod=fmod)


UNARY_DOMAINS = {
    # op -> the input range where it is defined and not ill-conditioned
    "Sqrt": (0.1, 5.0), "Exp": (-5.0, 5.0), "Log": (0.1, 5.0), "Neg": (-3.0, 3.0), "Abs": (-3.0, 3.0),
    "Reciprocal": (0.2, 3.0), "Erf": (-3.0, 3.0), "Floor": (-3.0, 3.0), "Ceil": (-3.0, 3.0), "Sign": (-3.0, 3.0),
    "Sin": (-4.0, 4.0), "Cos": (-4.0, 4.0), "Tan": (-1.3, 1.3), "Asin": (-0.95, 0.95), "Acos": (-0.95, 0.95),
    "Atan": (-5.0, 5.0), "Sinh": (-3.0, 3.0), "Cosh": (-3.0, 3.0), "Asinh": (-5.0, 5.0), "Acosh": (1.1, 5.0),
    "Atanh": (-0.9, 0.9),
}


@pytest.mark.parametrize("shape", [(1,), (7, 13), (2, 1, 9)])
@pytest.mark.parametrize("op", sorted(UNARY_DOMAINS))
def test_unary_functions(op, shape):
    low, high = UNARY_DOMAINS[op]
    check(op, [rand(*shape, low=low, high=high)], opset=13)


@pytest.mark.parametrize("op", ["Sqrt", "Exp", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Erf"])
def test_unary_functions_at_opset_7_and_in_float16(op):
    low, high = UNARY_DOMAINS[op]
    check(op, [rand(3, 7, low=low, high=high)], opset=7 if op != "Erf" else 9)
    check(op, [rand(3, 7, low=low, high=high, dtype=np.float16)], opset=13)


@pytest.mark.parametrize("op", ["Neg", "Abs", "Sign"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_unary_functions_on_integers(op, dtype):
    check(op, [rand(4, 7, dtype=dtype, low=-20, high=20)], opset=13)


def test_round_halves_to_even():
    values = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49, -0.51, 7.2], dtype=np.float32)
    check("Round", [values], opset=11)


SPECIALS = np.array([np.inf, -np.inf, np.nan, 0.0, -1.5, 3.0, np.inf, np.nan, -np.inf], dtype=np.float32)


@pytest.mark.parametrize("negative", [0, 1])
@pytest.mark.parametrize("positive_", [0, 1])
def test_is_inf_signs(positive_, negative):
    check("IsInf", [SPECIALS.reshape(3, 3)], opset=10, detect_positive=positive_, detect_negative=negative)


@pytest.mark.parametrize("opset", [9, 13, 20])
def test_is_nan(opset):
    check("IsNaN", [SPECIALS], opset=opset)


@pytest.mark.parametrize("shapes", [((7,), (7,), (7,)), ((3, 1, 5), (1, 4, 1), (5,)), ((1,), (2, 13), ())])
def test_where_broadcasts(shapes):
    condition, then, otherwise = shapes
    check("Where", [rand(*condition, dtype=np.bool_), rand(*then, seed=1), rand(*otherwise, seed=2)], opset=16)


def test_where_on_integers():
    check("Where", [rand(3, 7, dtype=np.bool_), rand(3, 7, dtype=np.int64, low=-5, high=5), Const(np.int64(-1))])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_pow_of_integers(dtype):
    check("Pow", [rand(3, 5, dtype=dtype, low=-4, high=5), Const(np.array([2, 3, 0, 1, 2], dtype))], opset=15)


def test_where_with_a_scalar_condition():
    check("Where", [np.array(True), rand(3, 7), rand(7, seed=1)], opset=16)


@pytest.mark.parametrize("dtype", [np.bool_, np.int32])
def test_equal_on_other_types(dtype):
    check("Equal", [rand(3, 7, dtype=dtype, low=0, high=3), rand(7, dtype=dtype, low=0, high=3, seed=1)], opset=13)


def test_integer_mod_of_int8_takes_the_divisor_sign():
    check("Mod", [np.array([-7, 7, -7, 0, 5], np.int8), np.array([3, -3, -3, 2, 7], np.int8)], opset=13)


SMALL_INTEGER_CASES = {
    # name -> (op, lhs dtype and range, rhs range); uint8 Sub and int8 Mul wrap around like C
    "div_uint8": ("Div", np.uint8, (0, 200), (1, 20)),
    "sub_uint8_wraps": ("Sub", np.uint8, (0, 20), (1, 200)),
    "mul_int8_wraps": ("Mul", np.int8, (-100, 100), (-100, 100)),
    "add_int16": ("Add", np.int16, (-100, 100), (-100, 100)),
    "max_int8": ("Max", np.int8, (-100, 100), (-100, 100)),
}


@pytest.mark.parametrize("case", sorted(SMALL_INTEGER_CASES))
def test_small_integer_types(case):
    op, dtype, (low, high), (rhs_low, rhs_high) = SMALL_INTEGER_CASES[case]
    check(op, [rand(3, 7, dtype=dtype, low=low, high=high), rand(7, dtype=dtype, low=rhs_low, high=rhs_high, seed=2)],
          opset=14 if op != "Max" else 13)


@pytest.mark.parametrize("op", ["Neg", "Abs"])
def test_unary_on_int8(op):
    check(op, [rand(3, 7, dtype=np.int8, low=-100, high=100)], opset=13)


@pytest.mark.parametrize("op", ["Round", "Sign"])
def test_round_and_sign_in_float16(op):
    check(op, [np.array([0.5, 1.5, 2.5, -0.5, 0.0, -0.0, 3.25], np.float16)], opset=13)
