"""The part of a fused convolution's epilogue that oneDNN computes inside the convolution (its post-ops).

A separate epilogue stage is one more pass over the output: MobileNetV2's projections add their residual to a
tensor of up to 1.2 MB after the convolution wrote it; PP-OCR's hard-swish layers read and write theirs again. oneDNN
applies post-ops to each output block while it is in registers. Which stages it may take:

- the residual add (a binary `add` post-op), where the layer has no activation before it, and the residual has
  the output's shape and dtype (no broadcast) and, at run time, its NHWC layout (an activation after the add stays
  with the epilogue: torch's binary call takes none but ReLU);
- one activation right after the convolution, where oneDNN computes what the epilogue does,
  NaN and infinities included: sigmoid, tanh, hard-swish, SiLU (oneDNN's swish) and leaky ReLU of a nonzero slope.
  Not ReLU, Clip, hard-sigmoid, or leaky ReLU of slope 0: oneDNN computes them as a max with 0 (or a clamp) that
  turns NaN into 0, where ONNX, onnxruntime and torch keep NaN. Not GELU: torch's and oneDNN's differ at +inf
  (activation.py fixes torch's up).

The rest of the epilogue (PReLU, the activations above, an activation before a residual add) stays with
fused.apply_epilogue / bound_epilogue.make_epilogue, which get the layer with the post-ops' stages taken out.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from ...ir import ops
from ...ir.ops import ActivationType as A

# ActivationType -> (oneDNN's eltwise name, its scalars from the layer's alpha): each keeps NaN and infinities as
# the epilogue's kernel does (tests/kernels/test_onednn_post_ops.py)
_UNARY = {
    A.SIGMOID: lambda alpha: ("sigmoid", []),
    A.TANH: lambda alpha: ("tanh", []),
    A.HARD_SWISH: lambda alpha: ("hardswish", []),
    A.SILU: lambda alpha: ("swish", []),
    A.LEAKY_RELU: lambda alpha: ("leaky_relu", [alpha]),
}


class PostOps(NamedTuple):
    add_residual: bool  # oneDNN adds the residual (input 3) to the convolution's result
    unary: str  # oneDNN's activation after the convolution ("none"; always "none" with the residual)
    scalars: list
    rest: ops.FusedConvolution  # the layer with those stages removed: what the epilogue still does


def _fusable(type_: A | None, alpha: float) -> bool:
    return type_ in _UNARY and not (type_ is A.LEAKY_RELU and (alpha == 0.0 or alpha != alpha))


def plan_post_ops(op: ops.FusedConvolution, residual_fits: bool) -> PostOps:
    """The stages of `op`'s epilogue that oneDNN takes; `residual_fits`: the residual has the output's shape and
    dtype (the caller checks the layout on each run)."""
    nothing = PostOps(False, "none", [], op)
    if op.prelu or op.int8_input_scale or op.int8_output_scale:
        return nothing
    if op.activation is not None:
        if not _fusable(op.activation, op.alpha):
            return nothing
        name, scalars = _UNARY[op.activation](op.alpha)
        return PostOps(False, name, scalars, dataclasses.replace(op, activation=None, alpha=0.0, beta=0.0))
    if op.residual:
        # torch's binary oneDNN call takes no activation after the add but ReLU, which is not NaN-safe: the post
        # activation stays with the epilogue
        return PostOps(True, "none", [], dataclasses.replace(op, residual=False)) if residual_fits else nothing
    if _fusable(op.post_activation, op.post_alpha):
        name, scalars = _UNARY[op.post_activation](op.post_alpha)
        return PostOps(False, name, scalars, dataclasses.replace(op, post_activation=None, post_alpha=0.0,
                                                                 post_beta=0.0))
    return nothing


def residual_fits(output_shape, residual: torch.Tensor | None) -> bool:
    """Whether oneDNN can add `residual` to an NHWC result of `output_shape` as it is."""
    return (residual is not None and residual.dtype is torch.float32 and tuple(residual.shape) == tuple(output_shape)
            and residual.is_contiguous(memory_format=torch.channels_last))


def onednn_convolution(post: PostOps, image: torch.Tensor, residual: torch.Tensor | None, packed: torch.Tensor,
                       bias: torch.Tensor | None, padding: list, stride: list, dilation: list,
                       groups: int) -> torch.Tensor:
    """oneDNN's convolution of an NHWC `image` with the packed weight and `post`'s stages."""
    if post.add_residual:
        return torch.ops.mkldnn._convolution_pointwise.binary(
            image, residual, packed, bias, padding, stride, dilation, groups, "add", None, None, [], "")
    return torch.ops.mkldnn._convolution_pointwise(image, packed, bias, padding, stride, dilation, groups,
                                                   post.unary, post.scalars, "")
