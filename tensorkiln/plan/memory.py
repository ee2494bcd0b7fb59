"""Activation memory planning: every intermediate tensor gets an offset in one arena.

Liveness-based: a tensor lives from the step that writes it to the last step that reads it. Tensors whose
lifetimes do not overlap may share bytes. Pointwise steps write in place over an input that dies there, so do
fused layers marked `residual_in_place` (plan/in_place.py) over their residual, and reshapes alias their input,
so such chains share one block. Blocks are placed greedily, largest first,
at the lowest offset that does not collide with a placed block of overlapping lifetime (the "greedy by
size" strategy of TFLite's planner). Network inputs, outputs and weights live outside the arena: the
caller owns them.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from ..ir import ops
from .in_place import RESIDUAL_INPUT
from .plan import Step, TensorSpec

ALIGNMENT = 256  # bytes; what CUDA allocations guarantee, so kernels may assume it inside the arena

# layer kinds whose output may overwrite an input of the same shape and dtype that dies at that step
_IN_PLACE_KINDS = {ops.Activation.KIND, ops.Unary.KIND, ops.ElementWise.KIND, ops.Scale.KIND,
                   ops.ParametricReLU.KIND, ops.Cast.KIND}


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[str, int]  # tensor name -> byte offset in the arena
    arena_bytes: int
    activation_bytes: int  # sum of the sizes of all planned tensors, as if each had its own buffer

    def to_json(self) -> dict:
        return {"offsets": self.offsets, "arena_bytes": self.arena_bytes, "activation_bytes": self.activation_bytes}

    @classmethod
    def from_json(cls, data: dict) -> "MemoryPlan":
        return cls(dict(data["offsets"]), data["arena_bytes"], data["activation_bytes"])


@dataclasses.dataclass
class _Block:
    tensors: list[str]
    size: int
    first: int
    last: int


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def _aliases_input(step: Step, specs: dict[str, TensorSpec], last_use: dict[str, int], index: int) -> str | None:
    """The input this step's single output may share memory with, if any."""
    if len(step.outputs) != 1:
        return None
    if getattr(step.op, "residual_in_place", False):  # checked by plan/in_place.py: it dies here, same size
        return step.inputs[RESIDUAL_INPUT]
    out = specs.get(step.outputs[0])
    is_reshape = (isinstance(step.op, ops.Shuffle) and step.op.first_transpose is None
                  and step.op.second_transpose is None)
    if out is None or not (step.kind in _IN_PLACE_KINDS or is_reshape):
        return None
    for name in step.inputs:
        spec = specs.get(name) if name else None
        if spec is not None and last_use.get(name) == index and spec.dtype == out.dtype and spec.nbytes == out.nbytes:
            return name
    return None


def plan_memory(steps: Sequence[Step], tensors: Sequence[TensorSpec], outside: set[str]) -> MemoryPlan:
    """Plan the arena for `tensors` (the steps' outputs), except the names in `outside` (network outputs)."""
    # tensors sized only at run time are allocated when they are produced, outside the arena
    specs = {t.name: t for t in tensors if t.name not in outside and not t.is_dynamic}
    first: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.outputs:
            if name in specs:
                first.setdefault(name, index)
                last_use.setdefault(name, index)
        for name in step.inputs:
            if name in specs:
                last_use[name] = index
    block_of: dict[str, _Block] = {}
    blocks: list[_Block] = []
    for index, step in enumerate(steps):
        shared = _aliases_input(step, specs, last_use, index)
        for name in step.outputs:
            if name not in specs:
                continue
            if shared is not None:  # in place: the output continues the input's block
                block = block_of[shared]
                block.tensors.append(name)
                block.last = max(block.last, last_use[name])
            else:
                block = _Block([name], _aligned(specs[name].nbytes), first[name], last_use[name])
                blocks.append(block)
            block_of[name] = block
    offsets: dict[str, int] = {}
    placed: list[tuple[int, int, _Block]] = []  # (offset, end, block)
    arena = 0
    for block in sorted(blocks, key=lambda b: (-b.size, b.first)):
        collisions = sorted((o, e) for o, e, other in placed if other.first <= block.last and block.first <= other.last)
        offset = 0
        for start, end in collisions:
            if offset + block.size <= start:
                break
            offset = max(offset, end)
        placed.append((offset, offset + block.size, block))
        arena = max(arena, offset + block.size)
        for name in block.tensors:
            offsets[name] = offset
    return MemoryPlan(offsets, arena, sum(spec.nbytes for spec in specs.values()))
