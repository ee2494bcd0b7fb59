"""Bound kernels: a CPU tactic's kernel specialized, once, for one step's static shapes and weights.

The kernels of this package take (op, inputs) and look at their inputs on every call: which path applies, which
layout the input has, whether the weight was packed for oneDNN. For a step of a static plan most of that is known
before the first run. A binder, registered per (layer kind, implementation), gets the step's attributes and what is
known of its inputs (BoundInput: shape, dtype, layout, and the value of a weight) and returns a call `args ->
outputs` that does only what is left, or None where it has nothing better than the kernel itself. A bound call
computes exactly what its kernel computes (tests/kernels/test_bound_cpu.py compares them); where a run brings
something the binder did not plan for (an activation in another layout), it hands over to the kernel.

Binders see only validated plan data (the op dataclass, shapes, dtypes, weights); they generate no code.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ...ir import ops
from .conv import split_pads, torch_pad_arg
from .bound_epilogue import make_epilogue
from .fused import _onednn_available, packed_weight
from .onednn_post_ops import PostOps, onednn_convolution, plan_post_ops
from .shape_ops import _pad_positions


class BoundInput(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype
    value: torch.Tensor | None  # a weight's value (None for activations and inputs)
    memory_format: torch.memory_format  # the layout the engine keeps tensors of this rank in


Binder = Callable[[ops.OpAttrs, Sequence[BoundInput | None], Sequence[BoundInput]], Callable | None]
_BINDERS: dict[tuple[str, str], Binder] = {}


def binder(op_class: type[ops.OpAttrs], impl: str = "torch"):
    """Register a binder for the CPU kernel `impl` of layer kind `op_class`."""

    def register(fn: Binder) -> Binder:
        key = (op_class.KIND, impl)
        if key in _BINDERS:
            raise ValueError(f"binder {key} is registered twice")
        _BINDERS[key] = fn
        return fn

    return register


def bind_kernel(kind: str, impl: str, op: ops.OpAttrs, inputs: Sequence[BoundInput | None],
                outputs: Sequence[BoundInput]) -> Callable | None:
    """The bound call for a step of `kind` served by CPU kernel `impl`, or None (then the kernel runs as it is)."""
    from . import load_all  # the binders of the other modules of this package

    load_all()
    found = _BINDERS.get((kind, impl))
    if getattr(op, "int8_input_scale", 0.0) or getattr(op, "int8_output_scale", 0.0):
        return None  # a layer of a GPU INT8 engine: the kernel's own semantics (quantized input: int8_io.py)
    return None if found is None else found(op, inputs, outputs)


# ---- fused convolution: oneDNN on NHWC with the weight packed at bind time ----------------------------------------
@binder(ops.FusedConvolution, impl="torch_direct")
def bind_fused_convolution_direct(op: ops.FusedConvolution, inputs: Sequence[BoundInput | None],
                                  outputs: Sequence[BoundInput]):
    return bind_fused_convolution(op, inputs, outputs, packed=False)


@binder(ops.FusedConvolution)
def bind_fused_convolution(op: ops.FusedConvolution, inputs: Sequence[BoundInput | None],
                           outputs: Sequence[BoundInput], packed: bool = True):
    """The convolution with its epilogue chosen once; with `packed` (the `torch` tactic) oneDNN with the weight packed
    at bind time on NHWC inputs, else (`torch_direct`) torch's own convolution."""
    x, weight, bias, residual, slope = (list(inputs) + [None] * 5)[:5]
    if x is None or weight is None or len(x.shape) not in _CONVOLUTIONS or len(x.shape) != len(weight.shape):
        return None
    epilogue = make_epilogue(op, outputs[0], residual, slope)
    direct = _direct_convolution(op, len(x.shape))
    fits = residual is not None and residual.dtype is torch.float32 and residual.shape == outputs[0].shape
    post = plan_post_ops(op, fits)  # the epilogue stages oneDNN computes (onednn_post_ops.py)
    onednn = _onednn_call(op, x, weight, bias, outputs[0], post) if packed else None
    if onednn is None:
        return lambda args: [epilogue(direct(args), args)]
    rest = make_epilogue(post.rest, outputs[0], residual, slope)
    channels_last, adds_residual = torch.channels_last, post.add_residual

    def call(args: list) -> list[torch.Tensor]:
        image = args[0]
        # the kernel's own test: oneDNN only for an input that is NHWC and not also NCHW-contiguous (C or H*W of 1);
        # a residual that oneDNN adds must be NHWC too
        if (image.is_contiguous() or not image.is_contiguous(memory_format=channels_last)
                or adds_residual and not args[3].is_contiguous(memory_format=channels_last)):
            return [epilogue(direct(args), args)]
        return [rest(onednn(image, args[3] if adds_residual else None), args)]

    return call


_CONVOLUTIONS = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}


@binder(ops.Convolution)
def bind_convolution(op: ops.Convolution, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    """A plain convolution: kernels/cpu/conv.py's, with its padding worked out once."""
    x, weight = (list(inputs) + [None, None])[:2]
    if x is None or weight is None or len(x.shape) not in _CONVOLUTIONS or len(x.shape) != len(weight.shape):
        return None
    direct = _direct_convolution(op, len(x.shape))
    if len(inputs) > 2:
        return lambda args: [direct(args)]
    return lambda args: [direct([args[0], args[1], None])]


def _direct_convolution(op: ops.FusedConvolution, rank: int) -> Callable:
    """kernels/cpu/conv.py's convolution with its padding worked out once: torch's convolution (it picks its own
    backend), the input padded first where the pads are asymmetric."""
    begin, end = split_pads(op.pads)
    convolve, stride, dilation, groups = _CONVOLUTIONS[rank], op.stride, op.dilation, op.groups
    if begin == end:
        return lambda args: convolve(args[0], args[1], args[2], stride, begin, dilation, groups)
    pad = torch_pad_arg(begin, end)
    return lambda args: convolve(F.pad(args[0], pad), args[1], args[2], stride, 0, dilation, groups)


def _onednn_call(op, x: BoundInput, weight: BoundInput, bias: BoundInput | None, output: BoundInput,
                 post: PostOps):
    """`(image, residual) -> result`: oneDNN on an NHWC input with the weight packed now and `post`'s epilogue stages
    (fused.py's fast path), or None where it does not apply."""
    begin, end = split_pads(op.pads)
    if (weight.value is None or (bias is not None and bias.value is None) or len(x.shape) != 4
            or min(x.shape) < 0 or min(output.shape, default=0) < 0 or begin != end
            or x.memory_format is not torch.channels_last
            or any(t is not None and t.dtype is not torch.float32 for t in (x, weight, bias))
            or not _onednn_available() or weight.value.device.type != "cpu"):
        return None
    packed = packed_weight(weight.value, x.shape, op.stride, begin, op.dilation, op.groups)
    bias_value = None if bias is None else bias.value
    padding, stride, dilation, groups = list(begin), list(op.stride), list(op.dilation), op.groups
    return lambda image, residual: onednn_convolution(post, image, residual, packed, bias_value, padding, stride,
                                                      dilation, groups)


# ---- gather of constant indices: checked and made non-negative once ----------------------------------------------
@binder(ops.Gather)
def bind_gather(op: ops.Gather, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    data, indices = inputs
    if indices.value is None or not data.shape or min(data.shape) < 0:
        return None
    axis = op.axis % len(data.shape)
    size = data.shape[axis]
    flat = indices.value.long().reshape(-1)
    if flat.numel() and (int(flat.min()) < -size or int(flat.max()) >= size):
        return None  # the kernel raises its InputError on the run
    flat = torch.where(flat < 0, flat + size, flat)
    shape = tuple(data.shape[:axis]) + tuple(indices.shape) + tuple(data.shape[axis + 1:])
    select = torch.index_select

    def call(args: list) -> list[torch.Tensor]:
        return [select(args[0], axis, flat).reshape(shape)]

    return call


# ---- pad: F.pad's arguments, or the source positions of reflect/edge/wrap padding, made once ---------------------
@binder(ops.Pad)
def bind_pad(op: ops.Pad, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    x = inputs[0]
    if op.mode is ops.PaddingMode.CONSTANT or not x.shape or min(x.shape) < 0:
        return None  # constant padding is one F.pad call already
    rank = len(x.shape)
    begin, end = op.pads[:rank], op.pads[rank:]
    gathers = [(axis, _pad_positions(x.shape[axis], begin[axis], end[axis], op.mode, "cpu"))
               for axis in range(rank) if begin[axis] or end[axis]]
    select = torch.index_select

    def call(args: list) -> list[torch.Tensor]:
        y = args[0]
        for axis, positions in gathers:
            y = select(y, axis, positions)
        return [y]

    return call
