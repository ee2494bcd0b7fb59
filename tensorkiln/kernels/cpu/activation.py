"""Activations (one family, selected by ActivationType), parametric ReLU and unary math."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import ActivationType as A
from ...ir.ops import UnaryOperation as U
from ..registry import kernel


def _gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """GELU (erf) with GELU(+inf) = +inf, as onnxruntime and the formula x * Phi(x) give: PyTorch's vectorized CPU
    kernel returns NaN there. The check is one max over x (about a sixth of the GELU's own time); the fix-up pass runs
    only where x holds +inf or NaN."""
    y = F.gelu(x)
    if x.device.type == "cpu" and x.numel() and not bool(x.amax() < math.inf):
        y = torch.where(x == math.inf, x, y)
    return y


_ACTIVATIONS = {
    A.RELU: lambda x, a, b: torch.relu(x),
    A.SIGMOID: lambda x, a, b: torch.sigmoid(x),
    A.TANH: lambda x, a, b: torch.tanh(x),
    A.LEAKY_RELU: lambda x, a, b: F.leaky_relu(x, a),
    A.ELU: lambda x, a, b: F.elu(x, a),
    A.SELU: lambda x, a, b: b * torch.where(x > 0, x, a * torch.expm1(x)),
    A.SOFTPLUS: lambda x, a, b: F.softplus(x),
    A.SOFTSIGN: lambda x, a, b: F.softsign(x),
    A.CLIP: lambda x, a, b: torch.clamp(x, a, b),
    A.HARD_SIGMOID: lambda x, a, b: torch.clamp(a * x + b, 0, 1),
    A.HARD_SWISH: lambda x, a, b: F.hardswish(x),
    A.SCALED_TANH: lambda x, a, b: a * torch.tanh(b * x),
    A.THRESHOLDED_RELU: lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)),
    A.GELU_ERF: lambda x, a, b: _gelu_erf(x),
    A.GELU_TANH: lambda x, a, b: F.gelu(x, approximate="tanh"),
    A.SILU: lambda x, a, b: F.silu(x),
    A.MISH: lambda x, a, b: F.mish(x),
    A.CELU: lambda x, a, b: F.celu(x, a),
}


@kernel(ops.Activation)
def activation(op: ops.Activation, inputs):
    x = inputs[0]
    if op.type is A.CLIP and not x.is_floating_point():
        lo = None if math.isinf(op.alpha) else int(op.alpha)
        hi = None if math.isinf(op.beta) else int(op.beta)
        return [torch.clamp(x, lo, hi)]
    return [_ACTIVATIONS[op.type](x, op.alpha, op.beta)]


@kernel(ops.ParametricReLU)
def parametric_relu(op, inputs):
    x, slope = inputs
    return [torch.where(x >= 0, x, x * slope)]


def _round_half_even(x):
    return torch.round(x)  # torch rounds half to even, as ONNX Round does


def _sign(x):
    # torch.sign(NaN) is 0; ONNX Sign (onnxruntime, numpy) keeps NaN
    return torch.where(torch.isnan(x), x, torch.sign(x)) if x.is_floating_point() else torch.sign(x)


_UNARY = {
    U.EXP: torch.exp, U.LOG: torch.log, U.SQRT: torch.sqrt, U.RECIP: torch.reciprocal, U.ABS: torch.abs,
    U.NEG: torch.neg, U.ERF: torch.erf, U.SIN: torch.sin, U.COS: torch.cos, U.TAN: torch.tan,
    U.ASIN: torch.asin, U.ACOS: torch.acos, U.ATAN: torch.atan, U.SINH: torch.sinh, U.COSH: torch.cosh,
    U.ASINH: torch.asinh, U.ACOSH: torch.acosh, U.ATANH: torch.atanh, U.FLOOR: torch.floor,
    U.CEIL: torch.ceil, U.ROUND: _round_half_even, U.SIGN: _sign, U.NOT: torch.logical_not,
    U.BITWISE_NOT: torch.bitwise_not, U.ISNAN: torch.isnan, U.ISINF: torch.isinf,
}


@kernel(ops.Unary)
def unary(op: ops.Unary, inputs):
    x = inputs[0]
    if op.operation is U.RECIP and not x.is_floating_point():
        return [torch.div(torch.ones_like(x), x, rounding_mode="trunc")]
    if op.operation in (U.FLOOR, U.CEIL, U.ROUND) and not x.is_floating_point():
        return [x]
    return [_UNARY[op.operation](x)]
