"""Adding a plugin layer to a network (the counterpart of TensorRT's add_plugin_v2)."""
from __future__ import annotations

from typing import Any, Sequence

from ..ir import ops
from ..ir.graph import Layer, Tensor
from .params import make_params, params_to_json
from .registry import get_plugin


def plugin_op(type_name: str, params: Any = None) -> ops.Plugin:
    """The IR attributes of a plugin layer: its type and its parameters checked against the plugin's Params."""
    cls = get_plugin(type_name)
    try:
        checked = make_params(cls.Params, params)
    except ValueError as error:
        raise ValueError(f"plugin {type_name!r}: {error}") from None
    return ops.Plugin(type_name, params_to_json(checked), cls.DATA_DEPENDENT)


def add_plugin(network, type_name: str, inputs: Sequence[Tensor | None], params: Any = None,
               name: str | None = None, output_names: Sequence[str] | None = None) -> Layer:
    """Add a layer of the registered plugin `type_name` to a NetworkDefinition; its output shapes come from
    the plugin's `output_specs`. `params` is a Params instance, a dict of values for it, or None."""
    return network.add_layer(plugin_op(type_name, params), list(inputs), name or type_name, output_names)
