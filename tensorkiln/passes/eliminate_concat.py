"""Concatenation elimination: fold the concatenations that need no layer, flatten nested ones, and mark those
whose copy a memory planner can remove.

What this pass does not do: avoid the copy by itself. The CPU kernels are PyTorch operators that return new
tensors, so a concatenation copies its inputs (torch.cat) whatever this pass says. Removing the copy takes a
memory planner that places each producer's output at its offset inside the concatenation's buffer (and a
runtime that lets producers write there); `in_place=True` on a concatenation says that this placement is
valid (see `ops.Concatenation`):

- each input is produced by a layer (not a network input, not a constant) whose output nothing else reads,
  which is no network output, and which computes a fresh buffer (not a view: shuffles, splits, slices,
  expands and identities may return views of other buffers, so they are excluded);
- the concatenation's result is no network output (those live in caller-owned memory, outside the arena);
- every input fills one contiguous byte range of the result: all dims before the axis have size 1 (for
  NCHW on the channel axis: batch 1), so input i starts at byte sum(nbytes of inputs before i);
- no shape is dynamic (offsets are fixed at build time).

A planner that also writes pointwise layers over their inputs (plan/memory.py) must place the whole in-place
chain that ends at a producer inside the concatenation's region, or break the chain at the producer.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network
from .manager import Pass, register_pass
from .pattern import Uses, make_layer, replace_uses, splice

# producers whose output may be a view of another buffer (torch returns views for these)
_VIEW_KINDS = {ops.Shuffle.KIND, ops.Identity.KIND, ops.Split.KIND, ops.Slice.KIND, ops.Expand.KIND,
               ops.Concatenation.KIND}


def _axis(layer: Layer) -> int:
    return layer.op.axis % len(layer.outputs[0].shape)


def _not_in_place_because(concat: Layer, uses: Uses) -> str | None:
    """Why the producers of `concat`'s inputs cannot write into its buffer; None where they can."""
    out = concat.outputs[0]
    if uses.is_output(out):
        return "its result is a network output (caller-owned memory)"
    if any(-1 in t.shape for t in (out, *concat.inputs)):
        return "a shape is dynamic"
    outer = int(np.prod(out.shape[:_axis(concat)], dtype=np.int64))
    if outer != 1:
        return f"each input is strided in the result ({outer} blocks before axis {_axis(concat)})"
    for tensor in concat.inputs:
        if tensor.is_constant or tensor.producer is None:
            return f"input {tensor.name} is a constant or a network input"
        if uses.single_consumer(tensor) is not concat:
            return f"input {tensor.name} is also read elsewhere (or is a network output)"
        if tensor.producer.kind in _VIEW_KINDS:
            return f"input {tensor.name} comes from a {tensor.producer.kind} layer, which may return a view"
    return None


@register_pass
class EliminateConcat(Pass):
    name = "eliminate_concat"

    def run(self, network: Network) -> bool:
        changed = False
        for layer in list(network.layers):
            if layer.kind == ops.Concatenation.KIND and layer in network.layers:
                changed |= self._simplify(network, layer)
        uses = Uses(network)
        for layer in network.layers:
            if layer.kind != ops.Concatenation.KIND:
                continue
            reason = _not_in_place_because(layer, uses)
            if reason is None:
                self.count("in_place_eligible")
                self.log.append(f"{layer.name}: producers may write into its buffer (in_place)")
            else:
                self.log.append(f"{layer.name}: copies: {reason}")
            if layer.op.in_place != (reason is None):
                layer.op = dataclasses.replace(layer.op, in_place=reason is None)
                changed = True
        return changed

    def _simplify(self, network: Network, concat: Layer) -> bool:
        out = concat.outputs[0]
        flattened = self._flatten(network, concat)
        if all(t.is_constant for t in concat.inputs):
            # concatenation of constants  =>  a constant, computed now
            out.value = np.concatenate([t.value for t in concat.inputs], axis=_axis(concat))
            out.producer = None
            splice(network, [concat], [], before=concat)
            self._rewrote("folded", f"{concat.name} folded to a constant")
            return True
        if len(concat.inputs) == 1 and not Uses(network).is_output(out):
            # concatenation of one input  =>  its readers read the input
            replace_uses(network, out, concat.inputs[0])
            splice(network, [concat], [], before=concat)
            self._rewrote("single_input", f"{concat.name} removed: one input")
            return True
        if len(concat.inputs) == 1:
            # concatenation of one input that is a network output  =>  an identity (a view, no copy)
            identity = make_layer(network, ops.Identity(), concat.inputs, f"{concat.name}.identity", outputs=[out])
            splice(network, [concat], [identity], before=concat)
            self._rewrote("single_input", f"{concat.name} -> {identity.name}")
            return True
        return flattened

    def _flatten(self, network: Network, concat: Layer) -> bool:
        # concat(a, concat(b, c), d) on one axis, the inner one read only here  =>  concat(a, b, c, d)
        uses = Uses(network)
        inputs, inner = [], []
        for tensor in concat.inputs:
            producer = tensor.producer
            if (producer is not None and producer.kind == ops.Concatenation.KIND and _axis(producer) == _axis(concat)
                    and uses.single_consumer(tensor) is concat and producer in network.layers):
                inputs.extend(producer.inputs)
                inner.append(producer)
            else:
                inputs.append(tensor)
        if not inner:
            return False
        concat.inputs = inputs
        splice(network, inner, [], before=concat)
        self._rewrote("flattened", " + ".join(l.name for l in (*inner, concat)) + f" -> {concat.name}", len(inner))
        return True

    def _rewrote(self, rewrite: str, line: str, n: int = 1) -> None:
        self.count(rewrite, n)
        self.log.append(line)
