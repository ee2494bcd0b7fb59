"""LSTM, GRU and RNN."""
from __future__ import annotations

from ....ir import ops
from ..registry import converter


# the activation functions the ONNX spec of LSTM, GRU and RNN names (compared without case, as onnxruntime does)
ACTIVATIONS = frozenset(name.lower() for name in (
    "Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu", "Softsign",
    "Softplus"))


def activations(ctx, node) -> tuple[str, ...]:
    """The node's `activations`, each one the spec names (an unknown one was a KeyError in the kernel)."""
    names = tuple(ctx.attr(node, "activations", []))
    unknown = [name for name in names if not isinstance(name, str) or name.lower() not in ACTIVATIONS]
    if unknown:
        raise ctx.error(node, f"activations {unknown} are not ones the ONNX spec names "
                              f"({', '.join(sorted(ACTIVATIONS))})")
    return names


@converter("LSTM", "GRU", "RNN")
def recurrent(ctx, node):
    cell = node.op_type.lower()
    recurrence = ctx.input(node, 2)  # R: [directions, gates * hidden_size, hidden_size]
    hidden_size = ctx.attr(node, "hidden_size", recurrence.shape[-1] if len(recurrence.shape) == 3 else None)
    if hidden_size is None or int(hidden_size) < 1:
        raise ctx.error(node, f"hidden_size {hidden_size} is not a positive size (R has shape {list(recurrence.shape)})")
    op = ops.Recurrent(
        cell, int(hidden_size), ctx.attr(node, "direction", "forward"),
        activations(ctx, node), tuple(float(v) for v in ctx.attr(node, "activation_alpha", [])),
        tuple(float(v) for v in ctx.attr(node, "activation_beta", [])), float(ctx.attr(node, "clip", 0.0) or 0.0),
        bool(ctx.attr(node, "linear_before_reset", 0)), bool(ctx.attr(node, "input_forget", 0)),
        int(ctx.attr(node, "layout", 0)))
    count = 8 if cell == "lstm" else 6
    inputs = [ctx.input(node, i) for i in range(count)]
    outputs = ctx.network.add_layer(op, inputs, ctx.name(node)).outputs
    return outputs
