"""Activations: Relu, LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Clip, Elu, Selu, Celu,
Softplus, Softsign, Gelu, ThresholdedRelu, Mish."""
from __future__ import annotations

import math

from ....ir.ops import ActivationType as A
from ..registry import converter

# op type -> (activation type, attribute defaults for alpha and beta)
_SIMPLE = {
    "Relu": (A.RELU, None, None),
    "Sigmoid": (A.SIGMOID, None, None),
    "Tanh": (A.TANH, None, None),
    "LeakyRelu": (A.LEAKY_RELU, ("alpha", 0.01), None),
    "Elu": (A.ELU, ("alpha", 1.0), None),
    "Selu": (A.SELU, ("alpha", 1.67326319217681884765625), ("gamma", 1.05070102214813232421875)),
    "Celu": (A.CELU, ("alpha", 1.0), None),
    "Softplus": (A.SOFTPLUS, None, None),
    "Softsign": (A.SOFTSIGN, None, None),
    "HardSigmoid": (A.HARD_SIGMOID, ("alpha", 0.2), ("beta", 0.5)),
    "HardSwish": (A.HARD_SWISH, None, None),
    "ThresholdedRelu": (A.THRESHOLDED_RELU, ("alpha", 1.0), None),
    "Mish": (A.MISH, None, None),
}


@converter(*_SIMPLE)
def simple_activation(ctx, node):
    kind, alpha_attr, beta_attr = _SIMPLE[node.op_type]
    alpha = ctx.attr(node, *alpha_attr) if alpha_attr else 0.0
    beta = ctx.attr(node, *beta_attr) if beta_attr else 0.0
    return [ctx.network.add_activation(ctx.input(node, 0), kind, alpha, beta, name=ctx.name(node)).get_output(0)]


@converter("Gelu")
def gelu(ctx, node):
    kind = A.GELU_TANH if ctx.attr(node, "approximate", "none") == "tanh" else A.GELU_ERF
    return [ctx.network.add_activation(ctx.input(node, 0), kind, name=ctx.name(node)).get_output(0)]


@converter("PRelu")
def prelu(ctx, node):
    return [ctx.network.add_parametric_relu(ctx.input(node, 0), ctx.input(node, 1), name=ctx.name(node)).get_output(0)]


@converter("Clip")
def clip(ctx, node):
    if ctx.opset < 11:
        low, high = ctx.attr(node, "min", -math.inf), ctx.attr(node, "max", math.inf)
    else:
        low_value = ctx.require_constant(node, 1, "min") if ctx.input(node, 1) is not None else None
        high_value = ctx.require_constant(node, 2, "max") if ctx.input(node, 2) is not None else None
        for what, value in (("min", low_value), ("max", high_value)):
            if value is not None and value.size != 1:
                raise ctx.error(node, f"its {what} has shape {list(value.shape)}; Clip takes a scalar {what}")
        low = -math.inf if low_value is None else float(low_value.reshape(-1)[0])
        high = math.inf if high_value is None else float(high_value.reshape(-1)[0])
    return [ctx.network.add_activation(ctx.input(node, 0), A.CLIP, low, high, name=ctx.name(node)).get_output(0)]
