"""cuDNN fused-convolution tactics: convolution + bias + ReLU, and convolution + bias + residual add + ReLU, each as
one cuDNN call (the runtime-fusion entry points PyTorch's own conv-add-relu fuser uses). ReLU6 (clip to [0, 6]) is
the ReLU call and an in-place clamp of its top: two kernels where the portable kernel needs three (convolution, bias,
clamp). The tactic timer weighs them against the portable torch kernel and the Triton ones."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ..cpu.conv import split_pads, torch_pad_arg
from ..registry import kernel

_RELU = ops.ActivationType.RELU


def _relu_then_cap(op) -> bool:
    """clip(y, 0, beta) == min(relu(y), beta): the ReLU6 of MobileNets"""
    return op.activation is ops.ActivationType.CLIP and op.alpha == 0.0


def _conv_bias_relu(op) -> bool:
    # relu(conv(x) + bias), or that capped from above
    return (op.activation is _RELU or _relu_then_cap(op)) and not op.residual and op.post_activation is None


def _conv_bias_add_relu(op) -> bool:
    # relu(conv(x) + bias + residual): cuDNN adds the residual before its one activation
    return op.activation is None and op.residual and op.post_activation is _RELU


def _supports(op, inputs) -> bool:
    x = inputs[0]
    return (len(op.stride) == 2 and not op.prelu and x is not None and x.dtype.is_floating
            and (_conv_bias_relu(op) or _conv_bias_add_relu(op)))


@kernel(ops.FusedConvolution, target="cuda", impl="cudnn_fused", supports=_supports)
def fused_convolution_cudnn(op: ops.FusedConvolution, inputs):
    x, weight, bias, residual = (list(inputs) + [None] * 4)[:4]
    begin, end = split_pads(op.pads)
    padding = list(begin)
    if begin != end:  # cuDNN pads symmetrically; pad explicitly first
        x = F.pad(x, torch_pad_arg(begin, end))
        padding = [0, 0]
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    if residual is None:
        y = torch.cudnn_convolution_relu(x, weight, bias, list(op.stride), padding, list(op.dilation), op.groups)
        if _relu_then_cap(op):
            y = y.clamp_max_(op.beta)
    else:
        y = torch.cudnn_convolution_add_relu(x, weight, residual.to(x.dtype), 1.0, bias, list(op.stride), padding,
                                             list(op.dilation), op.groups)
    return [y]
