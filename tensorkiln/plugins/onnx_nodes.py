"""ONNX nodes served by plugins (a custom-domain node, or any op type without a converter, whose type name a
plugin is registered under) and by the fallback (onnx's reference implementation, with allow_fallback)."""
from __future__ import annotations

from .layer import add_plugin
from .registry import find_plugin


def plugin_for_node(node) -> bool:
    return find_plugin(node.op_type) is not None


def convert_plugin_node(ctx, node):
    """The node's attributes are the plugin's parameters; its inputs (None where omitted) the plugin's."""
    params = {attribute.name: ctx.attr(node, attribute.name) for attribute in node.attribute}
    inputs = [ctx.input(node, index) for index in range(len(node.input))]
    try:
        layer = add_plugin(ctx.network, node.op_type, inputs, params, name=ctx.name(node))
    except ValueError as error:
        raise ctx.error(node, str(error)) from None
    return layer.outputs


def convert_fallback_node(ctx, node):
    """A default-domain node without a converter, run by onnx.reference (built only with allow_fallback)."""
    from ..ir import ops
    from ..kernels.cpu.fallback import fallback_op

    inputs = [ctx.input(node, index) for index in range(len(node.input))]
    try:
        op = fallback_op(node, ctx.opset, inputs)
    except Exception as error:  # the reference implementation rejects the node: say so, with the node
        raise ctx.error(node, f"has no converter, and onnx's reference implementation cannot run it either "
                              f"({type(error).__name__}: {error})") from None
    layer = ctx.network.add_layer(op, inputs, name=ctx.name(node))
    assert isinstance(layer.op, ops.OnnxFallback)
    return layer.outputs
