"""Grouped-query and multi-query attention: K and V repeated to the query head count before attention, as Hugging
Face's repeat_kv exports it (x[:, :, None].expand(B, Hkv, G, S, D).reshape(B, Hkv * G, S, D): a unit-axis shuffle,
an Expand, a reshape), are read unrepeated by the attention layer instead (`grouped_kv`), so the G copies are never
written. Called by recognize_attention after its rules; the repeats left without readers go with remove_dead_layers.
"""
from __future__ import annotations

import dataclasses

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from .pattern import make_layer, splice

_GROUP_AXIS = 2  # [B, Hkv, G, S, D]: the axis the Expand repeats


def _repeated_source(tensor: Tensor, heads: int) -> Tensor | None:
    """x [B, Hkv, 1, S, D] where `tensor` ([B, heads, S, D]) is x expanded along axis 2 and reshaped to merge it."""
    reshape = tensor.producer
    if reshape is None or reshape.kind != ops.Shuffle.KIND or len(tensor.shape) != 4:
        return None
    if reshape.op.first_transpose is not None or reshape.op.second_transpose is not None:
        return None
    expanded = reshape.inputs[0]
    expand = expanded.producer
    if expand is None or expand.kind != ops.Expand.KIND or len(expanded.shape) != 5:
        return None
    source = expand.inputs[0]
    b, kv_heads, group, s, d = expanded.shape
    if source.shape != (b, kv_heads, 1, s, d) or kv_heads * group != heads or (b, heads, s, d) != tensor.shape:
        return None
    return source


def _without_unit_axis(op: ops.Shuffle, axis: int, shape: tuple[int, ...]) -> ops.Shuffle:
    """The shuffle whose output is op's (of shape `shape`) without its unit dim `axis`: the same elements in the same
    order, so the reshape loses the 1 that lands there and the last transpose the axis."""
    perm = op.second_transpose
    if perm is None:
        return dataclasses.replace(op, reshape_dims=shape[:axis] + shape[axis + 1:])
    dropped = perm[axis]
    dims = op.reshape_dims[:dropped] + op.reshape_dims[dropped + 1:]
    perm = tuple(p - (p > dropped) for p in perm if p != dropped)
    return dataclasses.replace(op, reshape_dims=dims, second_transpose=None if perm == tuple(range(len(perm)))
                               else perm)


def _heads_view(network: Network, source: Tensor, base: str, new_layers: list[Layer]) -> Tensor:
    """source [B, Hkv, 1, S, D] as [B, Hkv, S, D]: the shuffle that made it with the unit axis dropped, or a reshape."""
    shape = source.shape
    maker = source.producer
    if maker is not None and maker.kind == ops.Shuffle.KIND and (maker.op.second_transpose is not None
                                                                 or maker.op.reshape_dims is not None):
        op, origin = _without_unit_axis(maker.op, _GROUP_AXIS, shape), maker.inputs[0]
    else:
        op, origin = ops.Shuffle(reshape_dims=shape[:_GROUP_AXIS] + shape[_GROUP_AXIS + 1:]), source
    if op.first_transpose is None and op.second_transpose is None and op.reshape_dims == origin.shape:
        return origin
    layer = make_layer(network, op, [origin], base)
    new_layers.append(layer)
    return layer.outputs[0]


def ungroup_kv(owner, network: Network) -> bool:
    """Read repeated K/V heads unrepeated in every attention layer that has them; counts `grouped_kv`."""
    changed = False
    for layer in list(network.layers):
        if layer.kind != ops.Attention.KIND or layer.op.grouped_kv or len(layer.inputs[0].shape) != 4:
            continue
        heads = layer.inputs[0].shape[1]
        sources = [_repeated_source(t, heads) for t in layer.inputs[1:3]]
        if any(s is None for s in sources) or sources[0].shape[1] != sources[1].shape[1]:
            continue
        new_layers: list[Layer] = []
        k, v = (_heads_view(network, s, f"{layer.name}.{what}_heads", new_layers) for s, what in zip(sources, "kv"))
        layer.inputs[1:3] = [k, v]
        layer.op = dataclasses.replace(layer.op, grouped_kv=True)
        splice(network, [], new_layers, before=layer)
        owner.count("grouped_kv")
        owner.log.append(f"{layer.name}: K and V read unrepeated ({sources[0].shape[1]} of {heads} heads)")
        changed = True
    return changed
