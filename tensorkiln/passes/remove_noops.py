"""No-op removal: layers whose output holds exactly their input's values are removed, and their readers read
the input instead.

A no-op whose output is a network output is removed only where the layer that produces its input can write
the output instead (the output keeps its name); otherwise it stays. Elementwise no-ops (x + 0, x * 1, ...) are
removed only where the constant broadcasts the result to no larger shape and keeps its dtype.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..ir.ops import ElementWiseOperation as E
from .manager import Pass, register_pass
from .merge_shuffles import IDENTITY, bypass, compose_shuffles, fused_names
from .pattern import Uses, splice

MAX_SHUFFLE_CHAIN = 8  # shuffles looked back over for a chain that cancels out

# What a rule finds: the tensor the layer's output equals, and the earlier layers that go with the layer.
Found = tuple[Tensor, list[Layer]]


@dataclasses.dataclass(frozen=True)
class Noop:
    name: str  # the rewrite counter
    kind: str  # the layer kind it applies to
    find: Callable[[Layer, Uses], "Found | None"]


def _identity(layer: Layer, uses: Uses) -> Found | None:
    return layer.inputs[0], []


def _same_type_cast(layer: Layer, uses: Uses) -> Found | None:
    return (layer.inputs[0], []) if layer.inputs[0].dtype == layer.op.to else None


def _identity_shuffle(layer: Layer, uses: Uses) -> Found | None:
    x = layer.inputs[0]
    return (x, []) if compose_shuffles(x.shape, [layer.op]) == IDENTITY else None


def _cancelling_shuffles(layer: Layer, uses: Uses) -> Found | None:
    """The shortest chain of shuffles ending at `layer` (each read only by the next) that changes nothing."""
    chain = [layer]
    while len(chain) < MAX_SHUFFLE_CHAIN:
        before = chain[0].inputs[0].producer
        if before is None or before.kind != ops.Shuffle.KIND:
            return None
        if uses.single_consumer(before.outputs[0]) is not chain[0]:
            return None
        chain.insert(0, before)
        if compose_shuffles(before.inputs[0].shape, [l.op for l in chain]) == IDENTITY:
            return before.inputs[0], chain[:-1]
    return None


def _all_equal(tensor: Tensor, value: float) -> bool:
    return tensor.is_constant and tensor.value.size > 0 and bool(np.all(tensor.value == value))


def _neutral(operation: E, value: float, commutative: bool):
    """x (op) c, and c (op) x where `commutative`, with every element of c equal to `value`."""

    def find(layer: Layer, uses: Uses) -> Found | None:
        if layer.op.operation is not operation:
            return None
        a, b = layer.inputs
        out = layer.outputs[0]
        for x, c in ((a, b), (b, a)) if commutative else ((a, b),):
            if _all_equal(c, value) and (x.shape, x.dtype) == (out.shape, out.dtype):
                return x, []
        return None

    return find


RULES = [
    # identity (and Dropout, which the ONNX importer writes as an identity)  =>  its input
    Noop("identity", ops.Identity.KIND, _identity),
    # cast to the type the input already has  =>  its input
    Noop("cast", ops.Cast.KIND, _same_type_cast),
    # shuffle that changes nothing (reshape to the same shape, identity permutation)  =>  its input
    Noop("shuffle", ops.Shuffle.KIND, _identity_shuffle),
    # shuffles that cancel out (a transpose and its inverse, a reshape and its undoing)  =>  the first one's input
    Noop("shuffle_chain", ops.Shuffle.KIND, _cancelling_shuffles),
    # x + 0, 0 + x  =>  x
    Noop("add_zero", ops.ElementWise.KIND, _neutral(E.SUM, 0.0, commutative=True)),
    # x - 0  =>  x
    Noop("sub_zero", ops.ElementWise.KIND, _neutral(E.SUB, 0.0, commutative=False)),
    # x * 1, 1 * x  =>  x
    Noop("mul_one", ops.ElementWise.KIND, _neutral(E.PROD, 1.0, commutative=True)),
    # x / 1  =>  x
    Noop("div_one", ops.ElementWise.KIND, _neutral(E.DIV, 1.0, commutative=False)),
]


@register_pass
class RemoveNoops(Pass):
    name = "remove_noops"

    def run(self, network: Network) -> bool:
        changed = False
        uses = Uses(network)
        for layer in list(network.layers):
            for rule in RULES:
                found = rule.find(layer, uses) if rule.kind == layer.kind else None
                if found is None or not bypass(network, layer, found[0], uses):
                    continue
                source, earlier = found
                splice(network, earlier, [], before=layer)
                names = [n for l in (*earlier, layer) for n in fused_names(l)]
                self.count(rule.name)
                self.log.append(f"removed {' + '.join(names)} ({rule.name})")
                uses = Uses(network)
                changed = True
                break
        return changed
