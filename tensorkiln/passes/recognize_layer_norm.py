"""LayerNorm recognition: the mean / variance / normalize / scale / shift chain that exporters write for
layer normalization (ONNX before opset 17, hand-written modules, TensorFlow) becomes one layer_norm layer."""
from __future__ import annotations

from ..ir import ops
from ..ir.graph import Network
from ..ir.ops import UnaryOperation as U
from .manager import Pass, register_pass
from .pattern import (Const, Rule, Var, add, any_of, apply_rules, div, mul, per_feature, power, reciprocal,
                      reduce_mean, sub, trailing_axes, unary)

X, D = Var("x"), Var("d")
CENTERED = sub(X, reduce_mean(X, name="mean"), name="d")
# variance as ReduceMean((x - mean)^2), the square written as Pow 2 or as a product with itself
VARIANCE = reduce_mean(any_of(power(D, Const(2.0)), mul(D, D)), name="variance")
STD = unary(U.SQRT, add(VARIANCE, Const(name="eps")))
# (x - mean) / std, or (x - mean) * (1 / std)
NORMALIZED = any_of(div(CENTERED, STD), mul(CENTERED, reciprocal(STD)))
GAMMA, BETA = Const(name="gamma", uniform=False), Const(name="beta", uniform=False)


def _layer_norm(rewrite, match):
    x = match["x"]
    rank = len(x.shape)
    k = trailing_axes(match.layer("mean"), rank) if rank else None
    if k is None or k != trailing_axes(match.layer("variance"), rank):
        return None
    if not x.dtype.is_floating or x.shape != rewrite.root.outputs[0].shape or match.value("eps") < 0:
        return None
    scale = per_feature(rewrite.network, match.get("gamma"), x, k, default=1.0)
    bias = per_feature(rewrite.network, match.get("beta"), x, k, default=None)
    if scale is None or (bias is None and match.get("beta") is not None):
        return None
    return ops.LayerNorm(-k, match.value("eps")), [x, scale, bias]


RULES = [
    # (x - mean) / sqrt(var + eps) * gamma + beta  =>  layer_norm(x, gamma, beta)
    Rule("layer_norm", add(mul(NORMALIZED, GAMMA), BETA), _layer_norm),
    # (x - mean) / sqrt(var + eps) * gamma  =>  layer_norm(x, gamma)
    Rule("layer_norm", mul(NORMALIZED, GAMMA), _layer_norm),
    # (x - mean) / sqrt(var + eps)  =>  layer_norm(x, ones)
    Rule("layer_norm", NORMALIZED, _layer_norm),
]


@register_pass
class RecognizeLayerNorm(Pass):
    name = "recognize_layer_norm"

    def run(self, network: Network) -> bool:
        return apply_rules(self, network, RULES)
