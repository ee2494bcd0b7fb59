"""A bound fused pointwise program: parsed once, and its intermediates reused in place.

The kernel (fused.py) runs a program such as PP-OCR's decomposed hard-swish, `x * clip(x + 3, 0, 6) / 6 * w + b`, as
six torch calls that each allocate a result the size of the activation (6.5 MB at 16x320x320): large blocks come
from fresh mmaps, and the kernel zeroes every page on first touch. Bound, each floating binary operation and
clip/sigmoid/tanh writes its result over an intermediate of the same shape and dtype that no later instruction
reads (torch's `out=`), so a program allocates one result instead of one per instruction. The shapes and dtypes of
the intermediates come from running the program once on the meta device at bind time. Everything else about the
program (the operations, their order, the kernels of the other instructions) is the kernel's.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...ir import ops
from ...ir.ops import ActivationType, ElementWiseOperation
from .bound import BoundInput, binder
from .fused import parse_program

# operations whose torch function takes `out=` and, on floating operands, computes what the kernel's does
_OUT_BINARY = {ElementWiseOperation.SUM: torch.add, ElementWiseOperation.SUB: torch.sub,
               ElementWiseOperation.PROD: torch.mul, ElementWiseOperation.DIV: torch.div,
               ElementWiseOperation.MAX: torch.maximum, ElementWiseOperation.MIN: torch.minimum}
_OUT_ACTIVATIONS = {ActivationType.SIGMOID: torch.sigmoid, ActivationType.TANH: torch.tanh}


def _meta(spec: BoundInput) -> torch.Tensor:
    if spec.value is not None:
        return spec.value.to("meta")
    return torch.empty(spec.shape, dtype=spec.dtype, device="meta")


def _out_call(op: ops.OpAttrs):
    """(torch function, extra arguments) that computes `op` with an `out=` tensor, or None."""
    if isinstance(op, ops.ElementWise) and op.operation in _OUT_BINARY:
        return _OUT_BINARY[op.operation], ()
    if isinstance(op, ops.Activation) and op.type in _OUT_ACTIVATIONS:
        return _OUT_ACTIVATIONS[op.type], ()
    if isinstance(op, ops.Activation) and op.type is ActivationType.CLIP:
        return torch.clamp, (op.alpha, op.beta)
    return None


@binder(ops.FusedPointwise)
def bind_fused_pointwise(op: ops.FusedPointwise, inputs: Sequence[BoundInput | None],
                         outputs: Sequence[BoundInput]):
    try:
        instructions, result = parse_program(op.program)
    except ValueError:
        return None  # the kernel raises it on the run
    if any(spec is None or min(spec.shape, default=0) < 0 for spec in inputs):
        return None
    names = {f"in{i}": i for i in range(len(inputs))}
    metas = [_meta(spec) for spec in inputs]
    program = []
    for step in instructions:
        if any(name not in names for name in step.operands):
            return None
        operands = tuple(names[name] for name in step.operands)
        try:
            metas.append(step.fn(step.op, [metas[i] for i in operands])[0])
        except Exception:  # noqa: BLE001 (whatever the kernel refuses, it refuses again on the run)
            return None
        program.append([step.fn, step.op, operands, None])
        names[step.target] = len(names)
    if result not in names:
        return None
    _reuse_dead_intermediates(program, metas, len(inputs))
    program, result_index = tuple(tuple(p) for p in program), names[result]

    def call(args: list) -> list[torch.Tensor]:
        values = list(args)
        for fn, step_op, operands, into in program:
            if into is None:
                values.append(fn(step_op, [values[i] for i in operands])[0])
            else:
                function, extra, target = into
                values.append(function(*[values[i] for i in operands], *extra, out=values[target]))
        return [values[result_index]]

    return call


def _reuse_dead_intermediates(program: list, metas: list, input_count: int) -> None:
    """Mark each instruction that can write over an operand: an intermediate made by an `out=`-capable instruction
    (so a fresh tensor of its own, never an input or a view of one), read by no later instruction, of the result's
    exact shape and floating dtype."""
    last_read = {}
    for index, (_, _, operands, _) in enumerate(program):
        for operand in operands:
            last_read[operand] = index
    result = input_count + len(program) - 1
    fresh = set()
    for index, entry in enumerate(program):
        _, step_op, operands, _ = entry
        value = input_count + index
        found = _out_call(step_op)
        if found is None or not metas[value].is_floating_point():
            continue
        for operand in operands:
            if (operand in fresh and last_read.get(operand) == index and operand != result
                    and metas[operand].shape == metas[value].shape and metas[operand].dtype == metas[value].dtype
                    and all(metas[o].is_floating_point() for o in operands)):
                entry[3] = (*found, operand)
                fresh.discard(operand)
                break
        fresh.add(value)
