"""A readable listing of a network, one line per layer."""
from __future__ import annotations

import dataclasses

from .graph import Network


def format_network(network: Network) -> str:
    lines = [f"network {network.name}: {len(network.layers)} layers"]
    for tensor in network.inputs:
        lines.append(f"  input  {tensor.describe()}")
    for layer in network.layers:
        attrs = ", ".join(f"{f.name}={_short(getattr(layer.op, f.name))}" for f in dataclasses.fields(layer.op))
        ins = ", ".join("-" if t is None else (f"<{t.name}>" if t.is_constant else t.name) for t in layer.inputs)
        outs = ", ".join(t.describe() for t in layer.outputs)
        lines.append(f"  {layer.name} = {layer.kind}({ins}{'; ' + attrs if attrs else ''}) -> {outs}")
    for tensor in network.outputs:
        lines.append(f"  output {tensor.describe()}")
    return "\n".join(lines)


def _short(value) -> str:
    text = getattr(value, "value", value)
    return str(text)
