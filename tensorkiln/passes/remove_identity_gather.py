"""Identity gathers: a Gather whose constant indices pick every element of its axis once, in order, only reshapes its
input, and becomes a reshape (free: a view, and merge_shuffles joins it with its neighbours).

    gather(x [.., n, ..], indices = arange(n) in any shape, axis)  =>  reshape(x, x.shape[:axis] + indices.shape + ..)

Hugging Face's mask helpers (transformers' masking_utils) index the padding mask with the batch and key positions
they enumerate (mask.flatten()[b * S + kv]); once fold_constants has computed those positions, the Gather that
remains copies the mask into the same order. In BERT's and DistilBERT's TorchScript exports it sat in the padding-
mask chain (Cast, Flatten, Gather, Reshape, Where): one kernel of the three that chain ran, every call.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network
from .manager import Pass, register_pass
from .pattern import make_layer, splice


def _picks_all_in_order(layer: Layer) -> bool:
    data, indices = layer.inputs[:2]
    if indices is None or not indices.is_constant or not data.shape:
        return False
    length = data.shape[layer.op.axis % len(data.shape)]
    picked = np.asarray(indices.value).reshape(-1)
    if picked.size != length or not np.issubdtype(picked.dtype, np.integer):
        return False
    if picked.size and (picked.min() < -length or picked.max() >= length):
        return False  # out of range: the kernel's error must stay
    return bool(np.array_equal(np.where(picked < 0, picked + length, picked), np.arange(length)))


@register_pass
class RemoveIdentityGather(Pass):
    name = "remove_identity_gather"

    def run(self, network: Network) -> bool:
        changed = False
        for layer in list(network.layers):
            if layer.kind != ops.Gather.KIND or len(layer.inputs) != 2 or not _picks_all_in_order(layer):
                continue
            out = layer.outputs[0]
            # gather(x, arange(n)) along its axis  =>  reshape(x) to the gather's output shape
            reshape = make_layer(network, ops.Shuffle(reshape_dims=tuple(out.shape)), [layer.inputs[0]],
                                 f"{layer.name}.reshape", outputs=[out])
            reshape.fused_from = (layer.name,)
            splice(network, [layer], [reshape], before=layer)
            self.count("gather")
            self.log.append(f"{layer.name}: gathers every index in order -> {reshape.name}")
            changed = True
        return changed
