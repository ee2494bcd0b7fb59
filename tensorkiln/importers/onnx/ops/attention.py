"""Attention (opsets 23 to 25), RotaryEmbedding, RMSNormalization, LinearAttention, CausalConvWithState, SwiGLU:
the transformer operators of recent opsets."""
from __future__ import annotations

import math

import numpy as np

from ....ir import ops
from ....ir.ops import ActivationType as A
from ....ir.dtypes import DataType
from ....ir.ops import ElementWiseOperation as E
from ..registry import converter
from ..types import onnx_to_datatype


def _outputs(layer, node):
    """The layer's outputs for the outputs the node names (an empty name: an omitted optional output)."""
    return [layer.outputs[i] if name else None for i, name in enumerate(node.output)]


def _fused_form(ctx, node, op: ops.OnnxAttention) -> ops.Attention | None:
    """The fused `attention` layer computing what this node computes, where its form is the one exporters write for
    scaled_dot_product_attention (torch's dynamo exporter at opset 23): 4-D Q, K, V without a KV cache, no softcap,
    window or other output, a boolean or same-dtype mask as long as the keys; K/V with fewer heads are grouped-query.
    A fully masked row gives zeros in ONNX, which is the fused layer's nan_to_zero (so does a query row with NaN
    there, where ONNX gives NaN). None where the node needs the general onnx_attention layer."""
    q, k, v, mask = (ctx.input(node, i) for i in range(4))
    if any(ctx.input(node, i) is not None for i in range(4, 7)) or any(node.output[1:]):
        return None
    if not all(len(t.shape) == 4 for t in (q, k, v)) or not q.dtype.is_floating or not q.dtype == k.dtype == v.dtype:
        return None
    if op.softcap or op.left_window >= 0 or op.right_window >= 0 or op.softmax_precision not in (None, q.dtype):
        return None
    heads, kv_heads = q.shape[1], k.shape[1]
    if k.shape[1] != v.shape[1] or kv_heads == 0 or heads % kv_heads or len({q.shape[0], k.shape[0], v.shape[0]}) != 1:
        return None
    if mask is not None and (mask.dtype not in (q.dtype, DataType.BOOL) or not mask.shape or
                             mask.shape[-1] != k.shape[2]):
        return None
    scale = op.scale if op.scale is not None else 1 / math.sqrt(q.shape[3])
    return ops.Attention(scale, has_mask=mask is not None, causal=op.is_causal, nan_to_zero=True,
                         grouped_kv=kv_heads != heads)


@converter("Attention")
def attention(ctx, node):
    precision = ctx.attr(node, "softmax_precision")
    softcap = ctx.attr(node, "softcap")
    op = ops.OnnxAttention(
        scale=None if ctx.attr(node, "scale") is None else float(ctx.attr(node, "scale")),
        is_causal=bool(ctx.attr(node, "is_causal", 0)),
        q_num_heads=ctx.attr(node, "q_num_heads"), kv_num_heads=ctx.attr(node, "kv_num_heads"),
        softcap=None if softcap is None else float(softcap),
        qk_matmul_output_mode=int(ctx.attr(node, "qk_matmul_output_mode", 0)),
        softmax_precision=None if precision is None else onnx_to_datatype(precision, "Attention softmax_precision"),
        left_window=int(ctx.attr(node, "left_window_size", -1)),
        right_window=int(ctx.attr(node, "right_window_size", -1)))
    if len(ctx.input(node, 0).shape) == 3 and (op.q_num_heads is None or op.kv_num_heads is None):
        raise ctx.error(node, "3-D Q, K, V need the q_num_heads and kv_num_heads attributes")
    fused = _fused_form(ctx, node, op)
    if fused is not None:
        return ctx.network.add_layer(fused, [ctx.input(node, i) for i in range(4)], ctx.name(node)).outputs
    layer = ctx.network.add_layer(op, [ctx.input(node, i) for i in range(7)], ctx.name(node))
    return _outputs(layer, node)


@converter("RotaryEmbedding")
def rotary_embedding(ctx, node):
    op = ops.RotaryEmbedding(int(ctx.attr(node, "num_heads", 0)), int(ctx.attr(node, "rotary_embedding_dim", 0)),
                             bool(ctx.attr(node, "interleaved", 0)))
    if len(ctx.input(node, 0).shape) == 3 and not op.num_heads:
        raise ctx.error(node, "a 3-D input needs the num_heads attribute")
    return ctx.network.add_layer(op, [ctx.input(node, i) for i in range(4)], ctx.name(node)).outputs


@converter("RMSNormalization")
def rms_normalization(ctx, node):
    op = ops.RMSNorm(int(ctx.attr(node, "axis", -1)), float(ctx.attr(node, "epsilon", 1e-5)))
    return ctx.network.add_layer(op, [ctx.input(node, 0), ctx.input(node, 1)], ctx.name(node)).outputs


@converter("LinearAttention")
def linear_attention(ctx, node):
    if ctx.attr(node, "q_num_heads") is None or ctx.attr(node, "kv_num_heads") is None:
        raise ctx.error(node, "the q_num_heads and kv_num_heads attributes are required")
    op = ops.LinearAttention(int(ctx.attr(node, "q_num_heads")), int(ctx.attr(node, "kv_num_heads")),
                             float(ctx.attr(node, "scale", 0.0) or 0.0), ctx.attr(node, "update_rule", "gated_delta"))
    gating, delta = op.update_rule in ("gated", "gated_delta"), op.update_rule in ("delta", "gated_delta")
    if gating != (ctx.input(node, 4) is not None) or delta != (ctx.input(node, 5) is not None):
        raise ctx.error(node, f"update_rule {op.update_rule!r} needs decay exactly when gated and beta exactly "
                              "when it has the delta rule")
    layer = ctx.network.add_layer(op, [ctx.input(node, i) for i in range(6)], ctx.name(node))
    return _outputs(layer, node)


@converter("CausalConvWithState")
def causal_conv_with_state(ctx, node):
    activation = ctx.attr(node, "activation", "none")
    if activation not in ("none", "silu", "swish"):
        raise ctx.error(node, f"activation {activation!r} is not one of none, silu, swish")
    layer = ctx.network.add_layer(ops.CausalConvWithState(activation), [ctx.input(node, i) for i in range(4)],
                                  ctx.name(node))
    return _outputs(layer, node)


@converter("SwiGLU")
def swiglu(ctx, node):
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    alpha = float(ctx.attr(node, "alpha", 1.0))
    net, name = ctx.network, ctx.name(node)
    scaled = a
    if alpha != 1.0:
        factor = net.add_constant((), np.array(alpha, dtype=a.dtype.numpy)).get_output(0)
        scaled = net.add_elementwise(a, factor, E.PROD, name=name).get_output(0)
    gate = net.add_activation(scaled, A.SIGMOID, name=name).get_output(0)
    swish = net.add_elementwise(a, gate, E.PROD, name=name).get_output(0)
    return [net.add_elementwise(swish, b, E.PROD, name=name).get_output(0)]
