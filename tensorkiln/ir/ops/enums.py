"""Enums naming the variants of a layer family (activation types, elementwise operations, ...), as TensorRT's API
does."""
from __future__ import annotations

import enum


class ActivationType(enum.Enum):
    RELU = "relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    LEAKY_RELU = "leaky_relu"  # alpha: negative slope
    ELU = "elu"  # alpha
    SELU = "selu"  # alpha, beta (gamma)
    SOFTPLUS = "softplus"
    SOFTSIGN = "softsign"
    CLIP = "clip"  # alpha: min, beta: max
    HARD_SIGMOID = "hard_sigmoid"  # alpha * x + beta, clamped to [0, 1]
    HARD_SWISH = "hard_swish"
    SCALED_TANH = "scaled_tanh"  # alpha * tanh(beta * x)
    THRESHOLDED_RELU = "thresholded_relu"  # alpha: threshold
    GELU_ERF = "gelu_erf"
    GELU_TANH = "gelu_tanh"
    SILU = "silu"
    MISH = "mish"
    CELU = "celu"  # alpha


class UnaryOperation(enum.Enum):
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RECIP = "recip"
    ABS = "abs"
    NEG = "neg"
    ERF = "erf"
    SIN = "sin"
    COS = "cos"
    TAN = "tan"
    ASIN = "asin"
    ACOS = "acos"
    ATAN = "atan"
    SINH = "sinh"
    COSH = "cosh"
    ASINH = "asinh"
    ACOSH = "acosh"
    ATANH = "atanh"
    FLOOR = "floor"
    CEIL = "ceil"
    ROUND = "round"  # half to even, as ONNX
    SIGN = "sign"
    NOT = "not"
    BITWISE_NOT = "bitwise_not"
    ISNAN = "isnan"
    ISINF = "isinf"


class ElementWiseOperation(enum.Enum):
    SUM = "sum"
    SUB = "sub"
    PROD = "prod"
    DIV = "div"  # integer inputs: truncation toward zero, as ONNX
    POW = "pow"
    MAX = "max"
    MIN = "min"
    EQUAL = "equal"
    LESS = "less"
    LESS_OR_EQUAL = "less_or_equal"
    GREATER = "greater"
    GREATER_OR_EQUAL = "greater_or_equal"
    AND = "and"
    OR = "or"
    XOR = "xor"
    MOD = "mod"  # sign of the divisor, as Python
    FMOD = "fmod"  # sign of the dividend, as C
    BITWISE_AND = "bitwise_and"
    BITWISE_OR = "bitwise_or"
    BITWISE_XOR = "bitwise_xor"
    BIT_SHIFT_LEFT = "bit_shift_left"
    BIT_SHIFT_RIGHT = "bit_shift_right"


class PoolingType(enum.Enum):
    MAX = "max"
    AVERAGE = "average"
    LP = "lp"


class ReduceOperation(enum.Enum):
    SUM = "sum"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    PROD = "prod"
    L1 = "l1"
    L2 = "l2"
    LOG_SUM = "log_sum"
    LOG_SUM_EXP = "log_sum_exp"
    SUM_SQUARE = "sum_square"


class ScaleMode(enum.Enum):
    UNIFORM = "uniform"  # one coefficient for the whole tensor
    CHANNEL = "channel"  # one coefficient per channel (axis `channel_axis`)
    ELEMENTWISE = "elementwise"  # one coefficient per element (broadcast from the trailing dims)


class PaddingMode(enum.Enum):
    CONSTANT = "constant"
    REFLECT = "reflect"
    EDGE = "edge"
    WRAP = "wrap"


class ResizeMode(enum.Enum):
    NEAREST = "nearest"
    LINEAR = "linear"
    CUBIC = "cubic"
