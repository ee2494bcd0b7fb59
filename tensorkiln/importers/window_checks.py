"""Checks of the sliding-window attributes of convolutions and poolings, shared by the ONNX and Caffe importers.

A model file is data: a stride, dilation or kernel of 0, a negative pad or a group of 0 would otherwise reach
shape arithmetic (a ZeroDivisionError traceback) or a kernel (SIGFPE). Each check returns the problem as one
phrase naming the attribute as the model spells it and its value, or None; the importer wraps it in its error,
which names the node or layer.
"""
from __future__ import annotations

from typing import Sequence


def count_problem(attribute: str, values: Sequence[int], rank: int, per_dim: int = 1) -> str | None:
    """`values` must hold `per_dim` values for each of the `rank` spatial dimensions."""
    if len(values) != per_dim * rank:
        return (f"attribute {attribute} = {list(values)} has {len(values)} value(s); the input has {rank} spatial "
                f"dimension(s), so it needs {per_dim * rank}")
    return None


def least_problem(attribute: str, values: Sequence[int], least: int) -> str | None:
    """Every value must be at least `least` (1 for kernels, strides and dilations, 0 for pads)."""
    if any(int(v) < least for v in values):
        kind = "positive" if least == 1 else "non-negative" if least == 0 else f"at least {least}"
        return f"attribute {attribute} = {list(values)} must be {kind} in every dimension; fix the model"
    return None


def group_problem(attribute: str, group: int, in_channels: int, out_channels: int | None = None) -> str | None:
    """A group count must be positive and divide the input channels (and the outputs, where given)."""
    if group < 1:
        return f"attribute {attribute} = {group} must be positive (1 for an ordinary convolution); fix the model"
    if in_channels % group or (out_channels is not None and out_channels % group):
        outputs = "" if out_channels is None else f" and the {out_channels} output channels"
        return (f"attribute {attribute} = {group} does not divide the {in_channels} input channels{outputs}; "
                "fix the model")
    return None


def first_problem(*problems: str | None) -> str | None:
    return next((problem for problem in problems if problem), None)
