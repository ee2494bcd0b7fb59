"""GELU recognition: the erf and tanh forms that exporters spell out with elementwise layers become one
activation layer (GELU_ERF / GELU_TANH), in every order PyTorch and TensorFlow exports produce."""
from __future__ import annotations

import math

from ..ir import ops
from ..ir.graph import Network
from ..ir.ops import ActivationType as A
from ..ir.ops import UnaryOperation as U
from .manager import Pass, register_pass
from .pattern import Const, Rule, Var, activation, add, any_of, apply_rules, div, mul, power, product, unary

X = Var("x")
SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# erf(x / sqrt(2)), the division also written as a product with 1 / sqrt(2)
ERF_TERM = add(unary(U.ERF, any_of(div(X, Const(SQRT_2)), mul(X, Const(1.0 / SQRT_2)))), Const(1.0))
# x^3 as Pow(x, 3) or as x * x * x
CUBE = any_of(power(X, Const(3.0)), mul(X, mul(X, X)))
TANH_TERM = add(activation(A.TANH, mul(Const(SQRT_2_OVER_PI), add(X, mul(Const(0.044715), CUBE)))), Const(1.0))


def _gelu(kind: A):
    def build(rewrite, match):
        x = match["x"]
        if not x.dtype.is_floating or x.shape != rewrite.root.outputs[0].shape:
            return None
        return ops.Activation(kind), [x]

    return build


RULES = [
    # x * 0.5 * (1 + erf(x / sqrt(2)))  (any bracketing and operand order)  =>  gelu_erf(x)
    Rule("gelu_erf", product(X, Const(0.5), ERF_TERM), _gelu(A.GELU_ERF)),
    # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))  =>  gelu_tanh(x)
    Rule("gelu_tanh", product(X, Const(0.5), TANH_TERM), _gelu(A.GELU_TANH)),
]


@register_pass
class RecognizeGelu(Pass):
    name = "recognize_gelu"

    def run(self, network: Network) -> bool:
        return apply_rules(self, network, RULES)
