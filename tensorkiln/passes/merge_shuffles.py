"""Shuffle merging: consecutive shuffle layers (the importers write Reshape, Flatten, Transpose, Squeeze and
Unsqueeze as shuffles) become one shuffle, or nothing where their net effect is the identity.

A shuffle is transpose -> reshape -> transpose (`ops.Shuffle`). Two of them in a row are not always one: a
reshape, then a transpose, then a reshape can interleave elements in ways no transpose -> reshape -> transpose
can. `compose_shuffles` finds out by following the input's index digits ("atoms"): every input dim starts as
one atom, a reshape that cuts through an atom splits it in two (outer and inner digit), a transpose reorders
the dims, which are runs of atoms. At the end each output dim is a run of atoms, and one shuffle can do the
whole chain when some order of whole input dims (the first transpose) keeps every output dim's atoms adjacent
and in order (so the reshape can form it); the second transpose then orders the output dims.

A pair is merged only where the tensor between the two has no other reader and is no network output. The merged
shuffle keeps the second one's name and output tensor (which may be a network output's).
"""
from __future__ import annotations

import collections
from typing import Sequence

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from .manager import Pass, register_pass
from .pattern import Uses, replace_uses, splice

IDENTITY = ops.Shuffle()


class _Atoms:
    """The digits of the input index that a chain of transposes and reshapes moves around."""

    def __init__(self, shape: Sequence[int]):
        self.sizes: list[int] = []
        self.shape = tuple(shape)
        self.dims = [self._new(d) for d in shape]  # per current dim: its atoms, outer first
        self.inputs = [a for dim in self.dims for a in dim]  # the atoms in the input's order

    def _new(self, size: int) -> list[int]:
        if size == 1:
            return []  # size-1 dims carry no digit
        self.sizes.append(size)
        return [len(self.sizes) - 1]

    def transpose(self, perm: Sequence[int]) -> None:
        self.dims = [self.dims[p] for p in perm]

    def reshape(self, shape: Sequence[int]) -> bool:
        """Regroup the atoms into dims of `shape`; False where a dim boundary cannot fall between digits."""
        flat = self._coalesced([a for dim in self.dims for a in dim])
        dims = self._regroup(flat, shape)
        if dims is not None:
            self.dims = dims
        return dims is not None

    def _coalesced(self, atoms: list[int]) -> list[int]:
        """`atoms` with every run that is also consecutive in the input merged into one (a mixed-radix number
        that a reshape may cut anywhere)."""
        position = {a: i for i, a in enumerate(self.inputs)}
        result: list[int] = []
        for atom in atoms:
            if result and position[atom] == position[result[-1]] + 1:
                low = result.pop()
                merged = self._new(self.sizes[low] * self.sizes[atom])[0]
                self.inputs[position[low]:position[atom] + 1] = [merged]
                position = {a: i for i, a in enumerate(self.inputs)}
                atom = merged
            result.append(atom)
        return result

    def _regroup(self, atoms: list[int], shape: Sequence[int]) -> list[list[int]] | None:
        """`atoms` (in order) cut into runs of the sizes in `shape`, splitting atoms that a boundary cuts."""
        flat = collections.deque(atoms)
        groups = []
        for size in shape:
            group, product = [], 1
            while product < size and flat:
                atom = flat.popleft()
                if product * self.sizes[atom] > size:  # the boundary cuts this digit: split it
                    outer = size // product
                    if size % product or self.sizes[atom] % outer:
                        return None
                    atom, inner = self._split(atom, outer)
                    flat.appendleft(inner)
                group.append(atom)
                product *= self.sizes[atom]
            if product != size:
                return None
            groups.append(group)
        return None if flat else groups

    def _split(self, atom: int, outer: int) -> tuple[int, int]:
        (high,), (low,) = self._new(outer), self._new(self.sizes[atom] // outer)
        for group in (self.inputs, *self.dims):
            if atom in group:
                index = group.index(atom)
                group[index:index + 1] = [high, low]
        return high, low

    def finish(self) -> None:
        """Merge the atoms that stay together (adjacent and in input order within one output dim)."""
        self.dims = [self._coalesced(dim) for dim in self.dims]

    def chunks_in_input_order(self) -> bool:
        """Whether every output dim is a run of consecutive atoms of the input (no first transpose needed)."""
        position = {a: i for i, a in enumerate(self.inputs)}
        return all(position[b] == position[a] + 1 for dim in self.dims for a, b in zip(dim, dim[1:]))

    def runs_of_input_dims(self) -> tuple[list[list[int]], list[list[int]]] | None:
        """(atoms of each input dim, runs of atoms that are whole input dims in the order a first transpose must
        put them so that every output dim is adjacent and in order); None where no order does."""
        inputs = self._regroup(list(self.inputs), self.shape)
        if inputs is None:
            return None
        after: dict[int, int] = {}
        before: dict[int, int] = {}
        for group in (*inputs, *self.dims):
            for a, b in zip(group, group[1:]):
                if after.setdefault(a, b) != b or before.setdefault(b, a) != a:
                    return None
        runs = []
        for start in (a for group in inputs for a in group if a not in before):
            run = [start]
            while run[-1] in after:
                run.append(after[run[-1]])
            runs.append(run)
        if sum(map(len, runs)) != len(self.inputs):
            return None  # a cycle
        return inputs, runs


def _apply(atoms: _Atoms, op: ops.Shuffle) -> bool:
    if op.first_transpose is not None:
        atoms.transpose(op.first_transpose)
    if op.reshape_dims is not None and not atoms.reshape(op.reshape_dims):
        return False
    if op.second_transpose is not None:
        atoms.transpose(op.second_transpose)
    return True


def compose_shuffles(shape: Sequence[int], steps: Sequence[ops.Shuffle]) -> ops.Shuffle | None:
    """The one shuffle that does `steps` in order to a tensor of `shape` (`IDENTITY` where they change nothing);
    None where no single shuffle does."""
    shape = tuple(shape)
    if any(d <= 0 for d in shape):
        return None  # empty or dynamic: leave them alone
    atoms = _Atoms(shape)
    if not all(_apply(atoms, op) for op in steps):
        return None
    atoms.finish()
    out_shape = _shape_after(shape, steps)
    if [a for dim in atoms.dims for a in dim] == atoms.inputs:  # element order kept: a reshape at most
        return IDENTITY if out_shape == shape else ops.Shuffle(reshape_dims=out_shape)
    first = None
    order = list(atoms.inputs)
    if not atoms.chunks_in_input_order():
        found = atoms.runs_of_input_dims()
        if found is None:
            return None
        inputs, runs = found
        final = [a for dim in atoms.dims for a in dim]
        runs.sort(key=lambda run: final.index(run[0]))  # in output order: no second transpose where none is needed
        order = [a for run in runs for a in run]
        first_of_input = {group[0]: d for d, group in enumerate(inputs) if group}
        moved = [first_of_input[a] for a in order if a in first_of_input]
        first = _permutation(moved, [d for d, group in enumerate(inputs) if not group])
    position = {a: i for i, a in enumerate(order)}
    placed = sorted((j for j, dim in enumerate(atoms.dims) if dim), key=lambda j: position[atoms.dims[j][0]])
    middle = _permutation(placed, [j for j, dim in enumerate(atoms.dims) if not dim])
    second = None if middle is None else tuple(middle.index(j) for j in range(len(out_shape)))
    transposed = shape if first is None else tuple(shape[p] for p in first)
    reshaped = out_shape if middle is None else tuple(out_shape[j] for j in middle)
    return ops.Shuffle(first, None if reshaped == transposed else reshaped, second)


def _permutation(ordered: list[int], ones: list[int]) -> tuple[int, ...] | None:
    """`ordered` dims followed by the size-1 dims; None where that changes no element's place."""
    if ordered == sorted(ordered):
        return None  # size-1 dims may stay where they are
    return tuple(ordered + ones)


def _shape_after(shape: tuple[int, ...], steps: Sequence[ops.Shuffle]) -> tuple[int, ...]:
    for op in steps:
        if op.first_transpose is not None:
            shape = tuple(shape[p] for p in op.first_transpose)
        if op.reshape_dims is not None:
            shape = tuple(op.reshape_dims)
        if op.second_transpose is not None:
            shape = tuple(shape[p] for p in op.second_transpose)
    return shape


def bypass(network: Network, layer: Layer, source: Tensor, uses: Uses) -> bool:
    """Remove `layer`, whose one output holds exactly `source`'s values: its readers read `source`. Where that
    output is a network output, `source`'s producer writes it instead (the output keeps its name); where that
    cannot be (`source` is a network input, a constant or itself an output) the layer stays: False."""
    out = layer.outputs[0]
    if len(layer.outputs) != 1 or (out.shape, out.dtype) != (source.shape, source.dtype):
        return False
    if not uses.is_output(out):
        replace_uses(network, out, source)
        splice(network, [layer], [], before=layer)
        return True
    producer = source.producer
    if producer is None or source.is_constant or uses.is_output(source):
        return False
    producer.outputs = [out if t is source else t for t in producer.outputs]
    out.producer = producer
    replace_uses(network, source, out)
    splice(network, [layer], [], before=layer)
    return True


def fused_names(layer: Layer) -> tuple[str, ...]:
    return tuple(getattr(layer, "fused_from", ()) or (layer.name,))


@register_pass
class MergeShuffles(Pass):
    name = "merge_shuffles"

    def run(self, network: Network) -> bool:
        changed = False
        uses = Uses(network)
        for layer in list(network.layers):
            if layer.kind != ops.Shuffle.KIND:
                continue
            first = layer.inputs[0].producer
            # shuffle -> shuffle, the tensor between read by nothing else  =>  one shuffle (or none)
            if first is None or first.kind != ops.Shuffle.KIND or uses.single_consumer(first.outputs[0]) is not layer:
                continue
            merged = compose_shuffles(first.inputs[0].shape, [first.op, layer.op])
            if merged is None:
                continue
            names = " + ".join((*fused_names(first), *fused_names(layer)))
            if merged == IDENTITY and bypass(network, layer, first.inputs[0], uses):
                self.count("identity")
                self.log.append(f"removed {names} (identity)")
            else:
                layer.op = ops.Identity() if merged == IDENTITY else merged
                layer.inputs = [first.inputs[0]]
                layer.fused_from = (*fused_names(first), *fused_names(layer))
                self.count("merged")
                self.log.append(f"{names} -> {layer.name}")
            splice(network, [first], [], before=first)
            uses = Uses(network)
            changed = True
        return changed
