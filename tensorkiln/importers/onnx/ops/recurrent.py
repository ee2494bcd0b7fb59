"""LSTM, GRU and RNN."""
from __future__ import annotations

from ....ir import ops
from ..registry import converter


@converter("LSTM", "GRU", "RNN")
def recurrent(ctx, node):
    cell = node.op_type.lower()
    op = ops.Recurrent(
        cell, int(ctx.attr(node, "hidden_size")), ctx.attr(node, "direction", "forward"),
        tuple(ctx.attr(node, "activations", [])), tuple(float(v) for v in ctx.attr(node, "activation_alpha", [])),
        tuple(float(v) for v in ctx.attr(node, "activation_beta", [])), float(ctx.attr(node, "clip", 0.0) or 0.0),
        bool(ctx.attr(node, "linear_before_reset", 0)), bool(ctx.attr(node, "input_forget", 0)),
        int(ctx.attr(node, "layout", 0)))
    count = 8 if cell == "lstm" else 6
    inputs = [ctx.input(node, i) for i in range(count)]
    outputs = ctx.network.add_layer(op, inputs, ctx.name(node)).outputs
    return outputs
