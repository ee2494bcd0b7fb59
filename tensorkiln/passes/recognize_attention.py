"""Attention recognition: MatMul(Q, K^T) [-> scale] [-> + mask] -> Softmax(last axis) -> MatMul(., V) becomes one
`attention` layer (scaled dot-product attention, one fused kernel where the target has it).

The attention layer takes K as [..., Sk, D]. Exporters write K^T in one of three places: a transposing shuffle
before the first MatMul (often merged with the head split, perm (0, 2, 3, 1)), the MatMul's transpose_b, or
nowhere we can see (K^T computed directly). The shuffle is rewritten to produce K instead (its last two output
dims swapped back), and it disappears where that is the identity; otherwise a transposing shuffle is added,
which the runtime serves as a view. The scale may be applied to the scores (Mul or Div by a constant) or, as
torch's scaled_dot_product_attention exports it, to Q and K^T separately (sqrt(scale) each): all are folded
into the layer's one `scale`.
"""
from __future__ import annotations

import dataclasses

from ..ir import ops
from ..ir.graph import Network, Tensor
from .manager import Pass, register_pass
from .pattern import Const, Op, Rule, Var, add, any_of, apply_rules, div, mul


def _scaled(operand, name: str):
    """operand, possibly multiplied or divided by a scalar constant (captured as name_mul / name_div)."""
    return any_of(mul(operand, Const(name=f"{name}_mul")), div(operand, Const(name=f"{name}_div")), operand)


SCORES = Op(ops.MatrixMultiply.KIND, (_scaled(Var("q"), "q"), _scaled(Var("kt"), "k")), name="scores")
SCALED = _scaled(SCORES, "s")
MASKED = any_of(add(SCALED, Var("mask"), name="masked"), SCALED)
PROBS = Op(ops.Softmax.KIND, (MASKED,), (("log", False),), name="probs")
ATTENTION = Op(ops.MatrixMultiply.KIND, (PROBS, Var("v")), (("transpose_a", False), ("transpose_b", False)))


def _scale(match) -> float | None:
    divisor = match.value("q_div") * match.value("k_div") * match.value("s_div")
    if divisor == 0:
        return None
    return match.value("q_mul") * match.value("k_mul") * match.value("s_mul") / divisor


def _swapped(perm):
    perm = (*perm[:-2], perm[-1], perm[-2])
    return None if perm == tuple(range(len(perm))) else perm


def _untransposed(op: ops.Shuffle) -> ops.Shuffle | None:
    """The shuffle whose output is this one's with the last two dims swapped, if its last step is a transpose."""
    if op.second_transpose is not None:
        return dataclasses.replace(op, second_transpose=_swapped(op.second_transpose))
    if op.reshape_dims is None and op.first_transpose is not None:
        return dataclasses.replace(op, first_transpose=_swapped(op.first_transpose))
    return None


def _key(rewrite, kt: Tensor, transposed: bool) -> Tensor:
    """K ([..., Sk, D]) from the first MatMul's second operand (K^T, or K itself under transpose_b)."""
    if transposed:
        return kt
    shuffle = kt.producer
    if shuffle is not None and shuffle.kind == ops.Shuffle.KIND:
        op = _untransposed(shuffle.op)
        if op is not None:
            rewrite.retire(shuffle)
            source = shuffle.inputs[0]
            noop = op.first_transpose is None and op.second_transpose is None
            if noop and op.reshape_dims in (None, source.shape):
                return source
            return rewrite.layer(op, [source], f"{shuffle.name}.key")
    rank = len(kt.shape)
    return rewrite.layer(ops.Shuffle(first_transpose=_swapped(tuple(range(rank)))), [kt], f"{kt.name}.key")


def _shapes_fit(q: Tensor, kt: Tensor, v: Tensor, transposed: bool) -> bool:
    """Same leading (batch, head) dims everywhere, and the q @ k^T @ v contraction sizes agree."""
    if min(len(q.shape), len(kt.shape), len(v.shape)) < 2 or not q.dtype.is_floating:
        return False
    depth, keys = (kt.shape[-1], kt.shape[-2]) if transposed else (kt.shape[-2], kt.shape[-1])
    same_batch = q.shape[:-2] == kt.shape[:-2] == v.shape[:-2]
    return same_batch and q.shape[-1] == depth and keys == v.shape[-2] and q.dtype == kt.dtype == v.dtype


def _attention(rewrite, match):
    scores, probs = match.layer("scores"), match.layer("probs")
    q, kt, v, mask = match["q"], match["kt"], match["v"], match.get("mask")
    rank = len(probs.outputs[0].shape)
    if scores.op.transpose_a or not rank or probs.op.axis % rank != rank - 1:
        return None
    if not _shapes_fit(q, kt, v, scores.op.transpose_b) or _scale(match) is None:
        return None
    if mask is not None and (match["masked"].shape != match["scores"].shape or mask.dtype != q.dtype):
        return None
    key = _key(rewrite, kt, scores.op.transpose_b)
    return ops.Attention(_scale(match), mask is not None), [q, key, v, mask]


RULES = [
    # softmax((q [* a]) @ (k^T [* b]) [* c or / c] [+ mask]) @ v  =>  attention(q, k, v, mask; scale = a*b*c)
    Rule("attention", ATTENTION, _attention),
]


@register_pass
class RecognizeAttention(Pass):
    name = "recognize_attention"

    def run(self, network: Network) -> bool:
        return apply_rules(self, network, RULES)
