"""Horizontal fusion: sibling layers with constant weights that read the same input become one wider layer
followed by a split.

    x -> conv_a (K=64)  -> relu          x -> conv (K=64+48+64, weights and biases concatenated) -> relu
    x -> conv_b (K=48)  -> relu    =>                    -> split(axis 1: 64, 48, 64) -> the three old tensors
    x -> conv_c (K=64)  -> relu

Siblings are convolutions with equal stride, pads, dilation, kernel size and groups == 1 (Inception's 1x1
branches), matrix multiplies by a constant 2-D matrix (the Q, K and V projections of attention), or fully
connected layers. A matrix multiply's bias is a separate Add layer in exported models: a per-feature constant
Add that follows a sibling is merged too (zeros for the siblings without one). Siblings merge only when the same
activation follows each of them, or none does: the merged chain (wide layer, bias, activation) is then what
fuse_vertical sees (so this pass runs before it), and it can take one epilogue for all. Merging siblings whose
epilogues differ (ResNet's first 1x1 convolution, followed by a ReLU, and its downsample, followed by the residual
Add) would leave the wide layer without a fusable epilogue, which costs more than the merge saves: cuDNN's fused
convolution + bias + ReLU kernels no longer apply. The split's outputs are views on the CPU (torch.split makes no copies).

A sibling whose result is a network output is left alone: its tensor would become a view of another buffer.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..weight_sharing import shared_derivation
from .manager import Pass, register_pass
from .pattern import Uses, make_constant, make_layer, splice

_WEIGHTED = {ops.Convolution.KIND, ops.MatrixMultiply.KIND, ops.FullyConnected.KIND}


@dataclasses.dataclass(frozen=True)
class _Member:
    layer: Layer
    weight: np.ndarray  # convolution [K, C, *k]; matrix multiply [C, K] (not transposed); fully connected [K, C]
    bias: np.ndarray | None  # [K]
    bias_add: Layer | None  # the Add layer that carried the bias of a matrix multiply
    tail: Tensor  # the sibling's last tensor (after its bias Add, if any)

    @property
    def width(self) -> int:
        return self.weight.shape[1] if self.layer.kind == ops.MatrixMultiply.KIND else self.weight.shape[0]


def _signature(layer: Layer, x: Tensor) -> tuple | None:
    """Siblings with equal signatures can be merged: same kind, attributes, weight layout and dtype."""
    if layer.kind not in _WEIGHTED or layer.inputs[0] is not x or len(layer.outputs) != 1:
        return None
    weights = [t for t in layer.inputs[1:] if t is not None]
    if not weights or not all(t.is_constant for t in weights) or -1 in x.shape:
        return None
    weight = layer.inputs[1]
    if layer.kind == ops.Convolution.KIND:
        return None if layer.op.groups != 1 else (layer.kind, layer.op, weight.shape[1:], weight.dtype)
    if layer.kind == ops.FullyConnected.KIND:
        return (layer.kind, layer.op, weight.shape[1:], weight.dtype)
    if layer.op.transpose_a or len(weight.shape) != 2 or not x.shape:
        return None
    inner = weight.shape[1] if layer.op.transpose_b else weight.shape[0]
    return (layer.kind, inner, weight.dtype)


def _bias_add(layer: Layer, uses: Uses, width: int) -> tuple[Layer, np.ndarray] | None:
    """The Add of a per-feature constant [width] (or a scalar) that alone reads a matrix multiply's result."""
    out = layer.outputs[0]
    add = uses.single_consumer(out)
    if add is None or add.kind != ops.ElementWise.KIND or add.op.operation is not ops.ElementWiseOperation.SUM:
        return None
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    if not other.is_constant or add.outputs[0].shape != out.shape or other.dtype != out.dtype:
        return None
    value = other.value
    if value.ndim > len(out.shape) or any(d != 1 for d in value.shape[:-1]) or value.size not in (1, width):
        return None
    return add, np.broadcast_to(value.reshape(-1), (width,)).copy()


def _member(layer: Layer, uses: Uses) -> _Member | None:
    weight = layer.inputs[1].value
    if layer.kind == ops.MatrixMultiply.KIND:
        weight = weight.T if layer.op.transpose_b else weight
        found = _bias_add(layer, uses, weight.shape[1])
        bias_add, bias = found if found is not None else (None, None)
    else:
        given = (list(layer.inputs) + [None])[2]
        bias_add, bias = None, None if given is None else given.value.reshape(-1)
    tail = (bias_add or layer).outputs[0]
    if uses.is_output(layer.outputs[0]) or uses.is_output(tail):
        return None
    return _Member(layer, weight, bias, bias_add, tail)


def _activation(member: _Member, uses: Uses) -> Layer | None:
    """The activation layer that alone reads the sibling's result, if one does."""
    follower = uses.single_consumer(member.tail)
    if follower is None or follower.kind != ops.Activation.KIND or uses.is_output(follower.outputs[0]):
        return None
    return follower


def _groups(x: Tensor, uses: Uses) -> list[list[_Member]]:
    by_signature: dict[tuple, list[_Member]] = {}
    for layer in uses.consumers(x):
        signature = _signature(layer, x)
        member = _member(layer, uses) if signature is not None else None
        if member is None:
            continue
        activation = _activation(member, uses)
        key = (signature, None if activation is None else activation.op)
        if all(m.layer is not layer for m in by_signature.get(key, [])):
            by_signature.setdefault(key, []).append(member)
    return [group for group in by_signature.values() if len(group) >= 2]


@register_pass
class FuseHorizontal(Pass):
    name = "fuse_horizontal"

    def run(self, network: Network) -> bool:
        changed = False
        uses = Uses(network)
        for x in [*network.inputs, *(t for layer in list(network.layers) for t in layer.outputs)]:
            while groups := _groups(x, uses):
                group = groups[0]
                activations = [_activation(m, uses) for m in group]
                self._merge(network, x, group, activations if activations[0] is not None else None)
                uses = Uses(network)
                changed = True
        return changed

    def _merge(self, network: Network, x: Tensor, members: list[_Member], activations: list[Layer] | None) -> None:
        first = members[0].layer
        base = f"{first.name}.wide"
        wide = _wide_layer(network, x, members, base)
        chain = [wide]
        if first.kind == ops.MatrixMultiply.KIND and any(m.bias is not None for m in members):
            bias = make_constant(network, _biases(members), f"{base}.bias")
            chain.append(make_layer(network, ops.ElementWise(ops.ElementWiseOperation.SUM),
                                    [chain[-1].outputs[0], bias], f"{base}.bias_add"))
        if activations:
            chain.append(make_layer(network, activations[0].op, [chain[-1].outputs[0]], f"{base}.{activations[0].kind}"))
        tails = [a.outputs[0] for a in activations] if activations else [m.tail for m in members]
        axis = 1 if first.kind == ops.Convolution.KIND else len(chain[-1].outputs[0].shape) - 1
        split = make_layer(network, ops.Split(axis, tuple(m.width for m in members)), [chain[-1].outputs[0]],
                           f"{base}.split", outputs=tails)
        merged = [l for m in members for l in (m.layer, m.bias_add) if l is not None] + list(activations or [])
        for layer in (*chain, split):
            # the original names, through what an earlier pass (fold_scale) already merged into a layer
            layer.fused_from = tuple(n for l in merged for n in (getattr(l, "fused_from", ()) or (l.name,)))
        order = {id(l): i for i, l in enumerate(network.layers)}
        splice(network, merged, [*chain, split], before=min((m.layer for m in members), key=lambda l: order[id(l)]))
        self.count(f"{first.kind}_groups")
        self.count(f"{first.kind}_layers", len(members))
        self.log.append(" + ".join(chain[0].fused_from) + f" -> {' + '.join(l.name for l in (*chain, split))}")


def _biases(members: list[_Member]) -> np.ndarray:
    dtype = members[0].weight.dtype
    return np.concatenate([np.zeros(m.width, dtype) if m.bias is None else m.bias.astype(dtype) for m in members])


def _wide_layer(network: Network, x: Tensor, members: list[_Member], base: str) -> Layer:
    first = members[0].layer
    # (shared_derivation: an engine with profiles concatenates a model's weights once, not once per shape)
    weights = [m.weight for m in members]
    if first.kind == ops.MatrixMultiply.KIND:
        wide = shared_derivation(weights, "concat1", lambda: np.concatenate(weights, axis=1))
        return make_layer(network, ops.MatrixMultiply(), [x, make_constant(network, wide, f"{base}.weight")], base)
    wide = shared_derivation(weights, "concat0", lambda: np.concatenate(weights, axis=0))
    weight = make_constant(network, wide, f"{base}.weight")
    bias = None
    if any(m.bias is not None for m in members):
        variant = ("biases", tuple(m.width for m in members), str(wide.dtype))
        biases = shared_derivation([m.bias for m in members], variant, lambda: _biases(members))
        bias = make_constant(network, biases, f"{base}.bias")
    return make_layer(network, first.op, [x, weight, bias], base)
