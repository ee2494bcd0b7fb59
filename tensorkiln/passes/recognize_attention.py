"""Attention recognition: MatMul(Q, K^T) [-> scale] [-> mask] -> Softmax(last axis) [-> NaN guard] -> MatMul(., V)
becomes one `attention` layer (scaled dot-product attention, one fused kernel where the target has it).

The forms exporters write (TorchScript and dynamo exporters, Hugging Face's sdpa and eager attention):
- K^T in one of three places: a transposing shuffle before the first MatMul (often merged with the head split,
  perm (0, 2, 3, 1)), the MatMul's transpose_b, or nowhere we can see (K^T computed directly). The shuffle is
  rewritten to produce K instead (its last two output dims swapped back), and it disappears where that is the
  identity; otherwise a transposing shuffle is added, which the runtime serves as a view.
- The scale on the scores (Mul or Div by a constant) or, as torch's scaled_dot_product_attention exports it, on Q
  and K^T separately (sqrt(scale) each): all are folded into the layer's one `scale`.
- The mask: added (a float mask, however it was built: Hugging Face's Where(keep, 0, dtype min)), or applied by a
  Where on the scores (Where(keep, scores, min) or Where(drop, min, scores)), which becomes the additive mask
  Where(keep, 0, min): the same scores wherever a score is far below the fill's magnitude (s + min rounds to min).
  A constant mask (a causal mask once fold_constants has evaluated its Trilu, Range or comparison) that is
  exactly the causal pattern becomes the layer's `causal` flag, and an all-zero one goes away.
- The NaN guard exporters put after Softmax (Where(IsNaN(p), 0, p): a fully masked row gives zeros) becomes the
  layer's `nan_to_zero`.
- Multi-query and grouped-query heads: K and V repeated to Q's head count (Unsqueeze, Expand, Reshape: repeat_kv)
  are read unrepeated (`grouped_kv`; attention_heads.py).
- One mask for every layer: each layer's Where of the one padding mask is computed once (`shared_mask`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import ops
from ..ir.dtypes import DataType
from ..ir.graph import Network, Tensor
from .attention_heads import ungroup_kv
from .manager import Pass, register_pass
from .pattern import Const, Op, Rule, Var, add, any_of, apply_rules, div, mul, unary


def _scaled(operand, name: str):
    """operand, possibly multiplied or divided by a scalar constant (captured as name_mul / name_div)."""
    return any_of(mul(operand, Const(name=f"{name}_mul")), div(operand, Const(name=f"{name}_div")), operand)


def _where(condition, then, otherwise, name: str) -> Op:
    return Op(ops.Select.KIND, (condition, then, otherwise), name=name)


SCORES = Op(ops.MatrixMultiply.KIND, (_scaled(Var("q"), "q"), _scaled(Var("kt"), "k")), name="scores")
SCALED = _scaled(SCORES, "s")
MASKED = any_of(
    add(SCALED, Var("mask"), name="masked"),  # an additive float mask
    _where(Var("keep"), SCALED, Const(name="fill"), "masked"),  # masked positions replaced by a very negative fill
    _where(Var("drop"), Const(name="fill"), SCALED, "masked"),  # masked_fill(drop, min)
    SCALED)
PROBS = Op(ops.Softmax.KIND, (MASKED,), (("log", False),), name="probs")
GUARDED = _where(unary(ops.UnaryOperation.ISNAN, PROBS), Const(0.0), PROBS, "guarded")  # NaN probabilities -> 0
ATTENTION = Op(ops.MatrixMultiply.KIND, (any_of(GUARDED, PROBS), Var("v")),
               (("transpose_a", False), ("transpose_b", False)))

# A fill (or a constant mask value) counts as masking where it is -inf or at most this fraction of the dtype's
# lowest value: a score s in range then gives s + fill == fill, and exp(fill - max) == 0.
_MASKING_FRACTION = 0.5


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


def _masking(value: float, dtype: np.dtype) -> bool:
    """Whether adding `value` to a score masks it (see _MASKING_FRACTION)."""
    return value == -np.inf or value <= _MASKING_FRACTION * float(np.finfo(dtype).min)


def _narrowed(condition: Tensor) -> Tensor:
    """The boolean condition before the broadcasts that add nothing: an Expand (the attention layer broadcasts its
    mask itself) and an And with a constant of all True (Hugging Face's padding mask [B, 1, 1, Sk] becomes
    [B, 1, Sq, Sk] that way). The kernels then read one mask row per batch for every query."""
    while condition.producer is not None:
        layer = condition.producer
        if layer.kind == ops.Expand.KIND:
            condition = layer.inputs[0]
        elif layer.kind == ops.ElementWise.KIND and layer.op.operation == ops.ElementWiseOperation.AND:
            kept = [t for t in layer.inputs if not (t.is_constant and t.value.size and np.all(t.value))]
            if len(kept) != 1:
                return condition
            condition = kept[0]
        else:
            return condition
    return condition


def _narrowed_select(rewrite, mask: Tensor) -> Tensor:
    """A float mask Where(condition, a, b) of two constants, computed from the narrowed condition."""
    layer = mask.producer
    if layer is None or layer.kind != ops.Select.KIND or not all(t.is_constant for t in layer.inputs[1:]):
        return mask
    condition = _narrowed(layer.inputs[0])
    if condition is layer.inputs[0]:
        return mask
    return rewrite.layer(ops.Select(), [condition, *layer.inputs[1:]], f"{layer.name}.narrow")


def _additive_mask(rewrite, match, q: Tensor) -> Tensor | None | bool:
    """The mask as one additive float tensor; None where there is none; False where the match's mask cannot be
    one (a mask of another dtype, a Where whose fill does not mask)."""
    if match.get("mask") is not None:
        return _narrowed_select(rewrite, match["mask"]) if match["mask"].dtype == q.dtype else False
    keep = match.get("keep") is not None
    condition = match.get("keep") if keep else match.get("drop")
    if condition is None:
        return None
    fill = match["fill"]
    if condition.dtype != DataType.BOOL or fill.dtype != q.dtype or not _masking(match.value("fill"),
                                                                                     q.dtype.numpy):
        return False
    zero = rewrite.constant(np.zeros((), q.dtype.numpy), "attention_mask_zero")
    kept, masked = (zero, fill) if keep else (fill, zero)
    return rewrite.layer(ops.Select(), [_narrowed(condition), kept, masked], f"{match['masked'].name}.additive_mask")


def _constant_mask_kind(mask: Tensor, queries: int, keys: int) -> str | None:
    """'none' for a constant mask of zeros, 'causal' for exactly the causal pattern (zero where key <= query, masking
    above: the kernels' top-left aligned causal mask), None otherwise (or where the mask is not constant)."""
    if not mask.is_constant or mask.value.ndim < 2 or mask.value.shape[-2:] not in ((queries, keys), (1, keys)):
        return None
    value = mask.value.astype(np.float64)
    if not np.any(value):
        return "none"
    if value.shape[-2] != queries:
        return None
    above = np.triu(np.ones((queries, keys), dtype=bool), 1)
    masking = (value == -np.inf) | (value <= _MASKING_FRACTION * float(np.finfo(mask.value.dtype).min))
    return "causal" if np.all(value[..., ~above] == 0) and np.all(masking[..., above]) else None


def _attention(rewrite, match):
    scores, probs = match.layer("scores"), match.layer("probs")
    q, kt, v = match["q"], match["kt"], match["v"]
    rank = len(probs.outputs[0].shape)
    if scores.op.transpose_a or not rank or probs.op.axis % rank != rank - 1:
        return None
    if not _shapes_fit(q, kt, v, scores.op.transpose_b) or _scale(match) is None:
        return None
    if match.get("masked") is not None and match["masked"].shape != match["scores"].shape:
        return None  # the mask broadcasts the scores to a larger shape
    mask = _additive_mask(rewrite, match, q)
    if mask is False:
        return None
    kind = None if mask is None else _constant_mask_kind(mask, q.shape[-2], v.shape[-2])
    key = _key(rewrite, kt, scores.op.transpose_b)
    op = ops.Attention(_scale(match), has_mask=mask is not None and kind is None, causal=kind == "causal",
                       nan_to_zero=match.get("guarded") is not None)
    return op, [q, key, v, mask if op.has_mask else None]


RULES = [
    # softmax((q [* a]) @ (k^T [* b]) [* c or / c] [+ mask or Where]) [NaN guard] @ v
    #   =>  attention(q, k, v, mask; scale = a*b*c, causal where the mask is the constant causal one)
    Rule("attention", ATTENTION, _attention),
]


def _mask_key(mask: Tensor):
    """What determines a float mask made by Where(condition, constant, constant): the condition tensor and the two
    constants' values; None for any other mask."""
    layer = mask.producer
    if layer is None or layer.kind != ops.Select.KIND or not all(t.is_constant for t in layer.inputs[1:]):
        return None
    constants = tuple((t.value.dtype.str, t.value.shape, t.value.tobytes()) for t in layer.inputs[1:])
    return id(layer.inputs[0]), constants


def share_masks(owner, network: Network) -> bool:
    """Attention layers whose masks are the same Where of the same condition (every layer of a transformer builds
    its own from the one padding mask) read the first one's: one small kernel instead of one per layer. The first is
    computed before every later attention layer, so the order stays valid; the others go with remove_dead_layers."""
    first: dict = {}
    changed = False
    for layer in network.layers:
        if layer.kind != ops.Attention.KIND or not layer.op.has_mask:
            continue
        key = _mask_key(layer.inputs[3])
        if key is None:
            continue
        shared = first.setdefault(key, layer.inputs[3])
        if shared is not layer.inputs[3]:
            layer.inputs[3] = shared
            owner.count("shared_mask")
            changed = True
    return changed


@register_pass
class RecognizeAttention(Pass):
    name = "recognize_attention"

    def run(self, network: Network) -> bool:
        changed = apply_rules(self, network, RULES)
        changed = ungroup_kv(self, network) or changed
        return share_masks(self, network) or changed
