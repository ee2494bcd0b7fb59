"""The fused transformer operators (domain com.microsoft) that onnxruntime's transformer optimizer and optimum write:
Attention, MultiHeadAttention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu, FastGelu and Gelu.

Each becomes the tensorkiln layers that compute it (a projection, the head split, the fused `attention` layer, a
layer norm, a GELU), so the graph optimizer fuses them as it fuses the primitive form. Semantics follow onnxruntime's
CPU kernels (the tests compare with them): a padding mask (`mask_index`, `key_padding_mask`) adds
`mask_filter_value` (default -10000) at masked keys, `unidirectional` is a causal mask, the scale defaults to
1 / sqrt(head size). A KV cache (past inputs, present outputs) and the packed or Megatron mask formats are refused
with one error each.
"""
from __future__ import annotations

import math

import numpy as np

from ....ir import ops
from ....ir.dtypes import DataType
from ....ir.ops import ActivationType as A
from ....ir.ops import ElementWiseOperation as E
from ..registry import converter

MICROSOFT = "com.microsoft"
DEFAULT_MASK_FILTER = -10000.0


# ---- shared pieces ------------------------------------------------------------------------------------------------
def _constant(ctx, value: np.ndarray, name: str):
    return ctx.network.add_constant(value.shape, value, name=name).get_output(0)


def _split_heads(ctx, node, x, heads: int):
    """[B, S, H * D] -> [B, H, S, D] (one shuffle: the runtime serves it as a view)."""
    batch, seq, hidden = x.shape
    if heads <= 0 or hidden % heads:
        raise ctx.error(node, f"a hidden size of {hidden} does not split into num_heads={heads} heads")
    return ctx.network.add_shuffle(x, None, (batch, seq, heads, hidden // heads), (0, 2, 1, 3),
                                   name=ctx.name(node)).get_output(0)


def _merge_heads(ctx, node, y):
    """[B, H, S, Dv] -> [B, S, H * Dv]."""
    batch, heads, seq, depth = y.shape
    return ctx.network.add_shuffle(y, (0, 2, 1, 3), (batch, seq, heads * depth), name=ctx.name(node)).get_output(0)


def _padding_mask(ctx, node, mask, batch: int, queries: int, keys: int, dtype: DataType, filter_value: float):
    """The additive [B, 1, 1 or S, L] mask of a mask_index / key_padding_mask: [B] (the keys from each end position
    on are masked), [B, L] or [B, S, L] (0 masks); filter_value where masked, 0 elsewhere."""
    net, name = ctx.network, ctx.name(node)
    if mask.shape == (batch,):
        positions = _constant(ctx, np.arange(keys, dtype=mask.dtype.numpy).reshape(1, keys), f"{name}.positions")
        ends = net.add_shuffle(mask, None, (batch, 1), name=name).get_output(0)
        keep = net.add_elementwise(positions, ends, E.LESS, name=name).get_output(0)
    elif mask.shape in ((batch, keys), (batch, queries, keys)):
        zero = _constant(ctx, np.zeros((), dtype=mask.dtype.numpy), f"{name}.zero")
        keep = net.add_elementwise(mask, zero, E.GREATER, name=name).get_output(0)
    else:
        raise ctx.error(node, f"a mask of shape {list(mask.shape)} is not supported: give [batch], [batch, keys] or "
                              f"[batch, queries, keys] ({batch}, {queries}, {keys} here)")
    rows = queries if len(keep.shape) == 3 else 1
    keep = net.add_shuffle(keep, None, (batch, 1, rows, keys), name=name).get_output(0)
    kept = _constant(ctx, np.zeros((), dtype=dtype.numpy), f"{name}.kept")
    masked = _constant(ctx, np.array(filter_value, dtype=dtype.numpy), f"{name}.masked")
    return net.add_select(keep, kept, masked, name=name).get_output(0)


def _attend(ctx, node, q, k, v, heads: int, kv_heads: int, masks: list):
    """Multi-head attention over [B, S, H * D] projections; the masks (additive, each broadcast to [B, H, S, L]) are
    summed. Returns [B, S, H * Dv]."""
    if ctx.attr(node, "do_rotary", 0) or ctx.attr(node, "past_present_share_buffer", 0):
        raise ctx.error(node, "do_rotary and past_present_share_buffer are not supported; export without them")
    qh, kh, vh = _split_heads(ctx, node, q, heads), _split_heads(ctx, node, k, kv_heads), \
        _split_heads(ctx, node, v, kv_heads)
    scale = float(ctx.attr(node, "scale", 0.0) or 0.0) or 1 / math.sqrt(qh.shape[-1])
    mask = None
    for extra in (m for m in masks if m is not None):
        mask = extra if mask is None else ctx.network.add_elementwise(mask, extra, E.SUM,
                                                                      name=ctx.name(node)).get_output(0)
    op = ops.Attention(scale, has_mask=mask is not None, causal=bool(ctx.attr(node, "unidirectional", 0)))
    out = ctx.network.add_layer(op, [qh, kh, vh, mask], ctx.name(node)).get_output(0)
    return _merge_heads(ctx, node, out)


def _no_cache(ctx, node, past_inputs: tuple[int, ...], present_outputs: tuple[int, ...]):
    if any(ctx.input(node, i) is not None for i in past_inputs) or any(
            i < len(node.output) and node.output[i] for i in present_outputs):
        raise ctx.error(node, "a KV cache (past inputs or present outputs) is not supported: export the model for "
                              "one forward pass without a cache")


def _attention_bias(ctx, node, index: int, q_dtype: DataType):
    bias = ctx.input(node, index)
    if bias is not None and (bias.dtype != q_dtype or len(bias.shape) != 4):
        raise ctx.error(node, f"attention_bias must be a 4-D {q_dtype.value} tensor, not {bias.describe()}")
    return bias


# ---- attention ----------------------------------------------------------------------------------------------------
@converter("Attention", domain=MICROSOFT)
def attention(ctx, node):
    """inputs: input [B, S, hidden], weights [hidden, q + k + v], bias, mask_index, past, attention_bias,
    past_sequence_length; the Q, K and V projections are one matrix product and a split."""
    x, weights, bias, mask = (ctx.input(node, i) for i in range(4))
    _no_cache(ctx, node, (4, 6), (1,))
    if len(x.shape) != 3 or len(weights.shape) != 2:
        raise ctx.error(node, f"input must be [batch, sequence, hidden] and weights 2-D, not {x.describe()}")
    heads = int(ctx.attr(node, "num_heads", 0))
    sizes = tuple(int(s) for s in ctx.attr(node, "qkv_hidden_sizes", []) or [weights.shape[1] // 3] * 3)
    if len(sizes) != 3 or sum(sizes) != weights.shape[1] or sizes[0] != sizes[1]:
        raise ctx.error(node, f"qkv_hidden_sizes {list(sizes)} must be three sizes, Q's equal to K's, that add up to "
                              f"the weights' {weights.shape[1]} columns")
    net, name = ctx.network, ctx.name(node)
    qkv = net.add_matrix_multiply(x, weights, name=name).get_output(0)
    if bias is not None:
        qkv = net.add_elementwise(qkv, bias, E.SUM, name=name).get_output(0)
    q, k, v = net.add_layer(ops.Split(2, sizes), [qkv], name).outputs
    batch, seq = x.shape[:2]
    filter_value = float(ctx.attr(node, "mask_filter_value", DEFAULT_MASK_FILTER))
    padding = None if mask is None else _padding_mask(ctx, node, mask, batch, seq, seq, x.dtype, filter_value)
    return [_attend(ctx, node, q, k, v, heads, heads, [padding, _attention_bias(ctx, node, 5, x.dtype)])]


@converter("MultiHeadAttention", domain=MICROSOFT)
def multi_head_attention(ctx, node):
    """inputs: query [B, S, hidden], key [B, L, hidden], value [B, L, v hidden], bias [q + k + v], key_padding_mask,
    attention_bias, past_key, past_value (3-D query, key and value only: not the packed formats)."""
    q, k, v, bias, mask = (ctx.input(node, i) for i in range(5))
    _no_cache(ctx, node, (6, 7), (1, 2))
    if k is None or v is None or not all(len(t.shape) == 3 for t in (q, k, v)):
        raise ctx.error(node, "only 3-D query, key and value ([batch, sequence, hidden]) are supported, not the "
                              "packed QKV or KV formats or 4-D key and value")
    net, name = ctx.network, ctx.name(node)
    if bias is not None:
        sizes = (q.shape[2], k.shape[2], v.shape[2])
        if bias.shape != (sum(sizes),):
            raise ctx.error(node, f"bias must be [{sum(sizes)}] (query, key and value biases), not {bias.describe()}")
        parts = net.add_layer(ops.Split(0, sizes), [bias], name).outputs
        q, k, v = (net.add_elementwise(t, b, E.SUM, name=name).get_output(0) for t, b in zip((q, k, v), parts))
    heads = int(ctx.attr(node, "num_heads", 0))
    filter_value = float(ctx.attr(node, "mask_filter_value", DEFAULT_MASK_FILTER))
    padding = None if mask is None else _padding_mask(ctx, node, mask, q.shape[0], q.shape[1], k.shape[1], q.dtype,
                                                      filter_value)
    return [_attend(ctx, node, q, k, v, heads, heads, [padding, _attention_bias(ctx, node, 5, q.dtype)])]


# ---- layer norms --------------------------------------------------------------------------------------------------
@converter("SkipLayerNormalization", domain=MICROSOFT)
def skip_layer_normalization(ctx, node):
    """LayerNorm(input + skip + bias) over the last dim; outputs: output, mean, inv_std_var, input_skip_bias_sum."""
    x, skip, gamma, beta, bias = (ctx.input(node, i) for i in range(5))
    if any(i < len(node.output) and node.output[i] for i in (1, 2)):
        raise ctx.error(node, "the mean and inv_std_var outputs are not supported (onnxruntime's inference graphs do "
                              "not read them)")
    net, name = ctx.network, ctx.name(node)
    total = net.add_elementwise(x, skip, E.SUM, name=name).get_output(0)
    if bias is not None:
        total = net.add_elementwise(total, bias, E.SUM, name=name).get_output(0)
    epsilon = float(ctx.attr(node, "epsilon", 1e-12))
    out = net.add_layer(ops.LayerNorm(-1, epsilon), [total, gamma, beta], name).get_output(0)
    outputs = [out, None, None, total]
    return outputs[:len(node.output)]


@converter("EmbedLayerNormalization", domain=MICROSOFT)
def embed_layer_normalization(ctx, node):
    """LayerNorm(word[input_ids] + position[position_ids or 0..S-1] + segment[segment_ids]); outputs: output,
    mask_index (the number of ones in each row of the mask), embedding_sum."""
    ids, segments, words, positions, segment_table, gamma, beta, mask, position_ids = (
        ctx.input(node, i) for i in range(9))
    net, name = ctx.network, ctx.name(node)
    batch, seq = ids.shape
    total = net.add_gather(words, ids, 0, name=name).get_output(0)
    if position_ids is None:
        position_ids = _constant(ctx, np.arange(seq, dtype=np.int64).reshape(1, seq), f"{name}.position_ids")
    total = net.add_elementwise(total, net.add_gather(positions, position_ids, 0, name=name).get_output(0), E.SUM,
                                name=name).get_output(0)
    if segments is not None and segment_table is not None:
        segment = net.add_gather(segment_table, segments, 0, name=name).get_output(0)
        total = net.add_elementwise(total, segment, E.SUM, name=name).get_output(0)
    epsilon = float(ctx.attr(node, "epsilon", 1e-12))
    out = net.add_layer(ops.LayerNorm(-1, epsilon), [total, gamma, beta], name).get_output(0)
    mask_index = None
    if len(node.output) > 1 and node.output[1]:
        if mask is None:
            mask_index = _constant(ctx, np.zeros(batch, dtype=np.int32), f"{name}.mask_index")
        else:
            counted = net.add_reduce(mask, ops.ReduceOperation.SUM, (1,), keep_dims=False, name=name).get_output(0)
            mask_index = net.add_cast(counted, DataType.INT32, name=name).get_output(0)
    return [out, mask_index, total][:len(node.output)]


# ---- GELU ---------------------------------------------------------------------------------------------------------
def _gelu(ctx, node, kind: A):
    x, bias = ctx.input(node, 0), ctx.input(node, 1)
    if bias is not None:
        x = ctx.network.add_elementwise(x, bias, E.SUM, name=ctx.name(node)).get_output(0)
    return [ctx.network.add_activation(x, kind, name=ctx.name(node)).get_output(0)]


@converter("BiasGelu", "Gelu", domain=MICROSOFT)
def bias_gelu(ctx, node):
    """x (+ bias): the erf GELU."""
    return _gelu(ctx, node, A.GELU_ERF)


@converter("FastGelu", domain=MICROSOFT)
def fast_gelu(ctx, node):
    """x (+ bias): the tanh approximation of GELU."""
    return _gelu(ctx, node, A.GELU_TANH)
