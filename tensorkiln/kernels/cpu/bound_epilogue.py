"""A fused layer's epilogue (fused.py's apply_epilogue) with its decisions made at bind time.

apply_epilogue asks on every call whether the PReLU slope is per channel, whether the residual adds in place, and
which activation runs; for a step of a static plan the answers follow from shapes and dtypes known before the first
run (MTCNN's PReLU layers: 25 us a call spent deciding, against 2 us for F.prelu). The stages are apply_epilogue's, in
its order: activation or PReLU, residual add, post activation, each in place where apply_epilogue works in place.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ...ir.ops import ActivationType
from ...ir.shape_rules import broadcast_shapes
from .fused import _activate, _add, _per_channel, _prelu

Stage = Callable[[torch.Tensor, list], torch.Tensor]


def make_epilogue(op, output, residual, slope) -> Stage:
    """`(y, args) -> y` for a fused layer `op` whose result is `output` (a BoundInput), its residual and PReLU slope
    the step's inputs 3 and 4 (BoundInputs or None)."""
    stages = [stage for stage in (_first(op, output, slope), _residual(op, output, residual),
                                  _activation(op.post_activation, op.post_alpha, op.post_beta)) if stage is not None]
    if not stages:
        return lambda y, args: y
    if len(stages) == 1:
        return stages[0]

    def epilogue(y: torch.Tensor, args: list) -> torch.Tensor:
        for stage in stages:
            y = stage(y, args)
        return y

    return epilogue


def _activation(type_, alpha: float, beta: float) -> Stage | None:
    if type_ is None:
        return None
    if type_ is ActivationType.RELU:
        return lambda y, args: y.relu_()
    return lambda y, args: _activate(type_, alpha, beta, y)


def _first(op, output, slope) -> Stage | None:
    if not op.prelu:
        return _activation(op.activation, op.alpha, op.beta)
    if slope is not None and slope.value is not None and min(output.shape, default=0) >= 0:
        if _per_channel(torch.empty(output.shape, dtype=output.dtype, device="meta"), slope.value):
            flat = slope.value.reshape(-1)
            return lambda y, args: F.prelu(y, flat)
    return lambda y, args: _prelu(y, args[4])


def _residual(op, output, residual) -> Stage | None:
    if not op.residual:
        return None
    if (residual is not None and residual.dtype == output.dtype and min(output.shape, default=0) >= 0
            and min(residual.shape, default=0) >= 0
            and broadcast_shapes(output.shape, residual.shape) == tuple(output.shape)):
        return lambda y, args: y.add_(args[3])
    return lambda y, args: _add(y, args[3])
