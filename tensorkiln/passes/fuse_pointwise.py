"""Pointwise fusion: maximal trees of elementwise, unary and activation layers become one fused_pointwise layer.

    a -> mul(b) -> add(c) -> relu        =>  fused_pointwise(a, b, c)
                                             ("t0 = prod in0 in1", "t1 = sum t0 in2", "t2 = relu t1 0 0", "out = t2")

A layer joins the group of its reader when its output has that one reader, is no network output, and already has
the group's output shape (inputs from outside the group may broadcast; an intermediate never grows). The group's
last layer (its root) gives its output tensor, and so its name and readers, to the fused layer; every other
member's result lives only inside the fused layer. Only floating-point results are fused: integer arithmetic is
shape computation, which fold_constants has already evaluated.
"""
from __future__ import annotations

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from .manager import Pass, register_pass
from .pattern import Uses, make_layer, splice

_POINTWISE = {ops.ElementWise.KIND, ops.Unary.KIND, ops.Activation.KIND}


def _fusible(layer: Layer) -> bool:
    return layer.kind in _POINTWISE and len(layer.outputs) == 1 and layer.outputs[0].dtype.is_floating


def _groups(network: Network, uses: Uses) -> list[list[Layer]]:
    """Groups of two or more layers, each in network order, its root last."""
    group_of: dict[int, list[Layer]] = {}
    groups: list[list[Layer]] = []
    for layer in reversed(network.layers):  # readers before the layers they read
        if not _fusible(layer):
            continue
        out = layer.outputs[0]
        reader = uses.single_consumer(out)
        group = group_of.get(id(reader)) if reader is not None else None
        if group is None or reader.outputs[0].shape != out.shape:
            group = []
            groups.append(group)
        group.append(layer)
        group_of[id(layer)] = group
    order = {id(layer): i for i, layer in enumerate(network.layers)}
    return [sorted(g, key=lambda l: order[id(l)]) for g in groups if len(g) >= 2]


def _operand(layer: Layer) -> tuple[str, ...]:
    """The opcode and extra arguments of one instruction."""
    op = layer.op
    if layer.kind == ops.Activation.KIND:
        return op.type.value, repr(float(op.alpha)), repr(float(op.beta))
    return (op.operation.value,)


def program_of(group: list[Layer]) -> tuple[tuple[str, ...], list[Tensor]]:
    """The SSA program of a group (in network order, root last) and its external inputs (in0, in1, ...)."""
    names: dict[int, str] = {}
    inputs: list[Tensor] = []
    lines: list[str] = []
    for index, layer in enumerate(group):
        operands = []
        for tensor in layer.inputs:
            if id(tensor) not in names:
                names[id(tensor)] = f"in{len(inputs)}"
                inputs.append(tensor)
            operands.append(names[id(tensor)])
        opcode, *extra = _operand(layer)
        target = f"t{index}"
        lines.append(" ".join([target, "=", opcode, *operands, *extra]))
        names[id(layer.outputs[0])] = target
    lines.append(f"out = t{len(group) - 1}")
    return tuple(lines), inputs


@register_pass
class FusePointwise(Pass):
    name = "fuse_pointwise"

    def run(self, network: Network) -> bool:
        groups = _groups(network, Uses(network))
        for group in groups:
            program, inputs = program_of(group)
            root = group[-1]
            base = f"{_names(group[0])[0]}.pointwise"
            fused = make_layer(network, ops.FusedPointwise(program), inputs, base, outputs=root.outputs)
            fused.fused_from = tuple(dict.fromkeys(name for layer in group for name in _names(layer)))
            splice(network, group, [fused], before=root)
            self.count("fused_pointwise")
            self.count("layers", len(group))
            self.log.append(" + ".join(fused.fused_from) + f" -> {fused.name}")
        return bool(groups)


def _names(layer: Layer) -> tuple[str, ...]:
    return tuple(getattr(layer, "fused_from", ()) or (layer.name,))
