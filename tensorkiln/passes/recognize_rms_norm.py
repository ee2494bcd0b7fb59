"""RMSNorm recognition (LLaMA, T5, Gemma): x / sqrt(mean(x^2) + eps) * gamma, written with a division by the
square root or with a product with its reciprocal (torch.rsqrt exports as Sqrt and Div(1, .)), becomes one
rms_norm layer. Runs after recognize_layer_norm: the tail of a layer normalization has the same shape."""
from __future__ import annotations

from ..ir import ops
from ..ir.graph import Network
from ..ir.ops import UnaryOperation as U
from .manager import Pass, register_pass
from .pattern import (Const, Rule, Var, add, any_of, apply_rules, div, mul, per_feature, power, reciprocal,
                      reduce_mean, trailing_axes, unary)

X = Var("x")
MEAN_SQUARE = reduce_mean(any_of(power(X, Const(2.0)), mul(X, X)), name="mean_square")
STD = unary(U.SQRT, add(MEAN_SQUARE, Const(name="eps")))
NORMALIZED = any_of(div(X, STD), mul(X, reciprocal(STD)))


def _rms_norm(rewrite, match):
    x = match["x"]
    k = trailing_axes(match.layer("mean_square"), len(x.shape)) if x.shape else None
    if k is None or not x.dtype.is_floating or x.shape != rewrite.root.outputs[0].shape or match.value("eps") < 0:
        return None
    scale = per_feature(rewrite.network, match.get("gamma"), x, k, default=None)
    if scale is None and match.get("gamma") is not None:
        return None
    return ops.RMSNorm(-k, match.value("eps")), [x, scale]


RULES = [
    # x / sqrt(mean(x^2) + eps) * gamma  =>  rms_norm(x, gamma)
    Rule("rms_norm", mul(NORMALIZED, Const(name="gamma", uniform=False)), _rms_norm),
    # x / sqrt(mean(x^2) + eps)  =>  rms_norm(x)
    Rule("rms_norm", NORMALIZED, _rms_norm),
]


@register_pass
class RecognizeRMSNorm(Pass):
    name = "recognize_rms_norm"

    def run(self, network: Network) -> bool:
        return apply_rules(self, network, RULES)
