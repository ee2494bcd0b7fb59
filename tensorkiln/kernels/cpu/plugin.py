"""Plugin layers: dispatch to the registered plugin class (tensorkiln.plugins). On the meta device (shape
inference) the plugin's declared output specs stand in for running it."""
from __future__ import annotations

import torch

from ...ir import ops
from ...ir.dtypes import DataType
from ...ir.infer import dynamic_size
from ...plugins import TensorDesc, plugin_instance
from ..registry import kernel


@kernel(ops.Plugin)
def plugin(op: ops.Plugin, inputs):
    layer = plugin_instance(op.type, op.params_json)
    present = [t for t in inputs if t is not None]
    if any(t.device.type == "meta" for t in present):
        descs = [None if t is None else TensorDesc(tuple(t.shape), DataType.from_torch(t.dtype)) for t in inputs]
        return [torch.empty(tuple(dynamic_size() if d < 0 else d for d in spec.shape), dtype=spec.dtype.torch,
                            device="meta") for spec in layer.output_specs(descs)]
    if layer.forward_cuda is not None and present and present[0].device.type == "cuda":
        return list(layer.forward_cuda(inputs))
    return list(layer.forward(inputs))
