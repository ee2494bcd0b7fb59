"""Residual adds in place: a fused convolution or matrix product whose residual input dies at it may store its output
over that residual, so that the two share one block of the memory plan.

Without it every ResNet bottleneck holds two tensors of its full width at its last convolution (the block's input,
kept for the residual add, and the block's output): at batch 256 in FP16 that is 2 x 392 MiB in layer1, the peak of
the whole network. The kernel must read each residual element before it stores the same element (the Triton
epilogues do: registry.KernelEntry.writes_over_residual); the step's op then says `residual_in_place=True`.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Sequence

from ..ir import ops
from ..kernels.registry import writes_over_residual
from .plan import Step, TensorSpec

RESIDUAL_INPUT = 3  # fused layers' inputs: x (or a), weights (or b), bias, residual, slope
# kinds whose kernels always return new storage, never a view of an input: a residual written by one of these and
# read only by these shares its bytes with no other live tensor, so storing over it disturbs nothing else
_FRESH_OUTPUT_KINDS = {ops.FusedConvolution.KIND, ops.Convolution.KIND, ops.FusedMatMul.KIND,
                       ops.MatrixMultiply.KIND, ops.LayerNorm.KIND, ops.RMSNorm.KIND,
                       ops.FusedMatMulLayerNorm.KIND, ops.FusedAddLayerNorm.KIND}


def residuals_in_place(steps: Sequence[Step], candidates: set[str]) -> list[Step]:
    """The steps, with `residual_in_place=True` on each of the `candidates` (residual_in_place_candidates) whose
    tactic can store its output over its residual input."""
    return [dataclasses.replace(step, op=dataclasses.replace(step.op, residual_in_place=True))
            if step.name in candidates and writes_over_residual(step.tactic) else step for step in steps]


def residual_in_place_candidates(steps: Sequence[Step], tensors: Sequence[TensorSpec], outside: set[str]) -> set[str]:
    """The names of the steps that may store over their residual input if their tactic can (whatever the tactics:
    the builder asks before choosing them, so that the timer times such tactics storing over the residual)."""
    specs = {t.name: t for t in tensors if t.name not in outside and not t.is_dynamic}
    producer = {name: step for step in steps for name in step.outputs}
    readers: dict[str, list[Step]] = defaultdict(list)
    last_use: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.inputs:
            if name is not None:
                readers[name].append(step)
                last_use[name] = index
    return {step.name for index, step in enumerate(steps)
            if _may_store_over_residual(step, index, specs, producer, readers, last_use)}


def _may_store_over_residual(step: Step, index: int, specs: dict[str, TensorSpec], producer: dict[str, Step],
                             readers: dict[str, list[Step]], last_use: dict[str, int]) -> bool:
    if not (hasattr(step.op, "residual_in_place") and step.op.residual and len(step.outputs) == 1):
        return False
    residual = step.inputs[RESIDUAL_INPUT] if len(step.inputs) > RESIDUAL_INPUT else None
    out = specs.get(step.outputs[0])
    source = specs.get(residual) if residual is not None else None
    if out is None or source is None or (source.dtype, source.shape) != (out.dtype, out.shape):
        return False
    # it dies here, and this step reads it only as the residual (a convolution reading its own output's bytes as
    # its input would read values other programs have already overwritten)
    if last_use.get(residual) != index or step.inputs.count(residual) != 1:
        return False
    if producer[residual].kind not in _FRESH_OUTPUT_KINDS:
        return False
    return all(r.kind in _FRESH_OUTPUT_KINDS for r in readers[residual])
