"""Small 1-D convolutions of one sequence as one matrix product (the `torch_gemm` tactic).

Silero VAD's encoder convolves 3 to 1 time steps of 64 to 258 channels: a few hundred thousand multiply-adds, where
torch's conv1d (through oneDNN) costs 14-24 us a call, mostly fixed. Taken as a matrix product, the windows of the
(padded) input gathered into rows [output steps, in channels x kernel] times the weight [in channels x kernel, out
channels] is one copy and one BLAS call: alone, 22 -> 13 us (129 -> 128 channels, 3 steps) and 24 -> 11 us for its
STFT (1 channel, kernel 256, stride 128, 258 filters). It loses where the window copy is large, so it is a tactic
that the timer weighs against torch's convolution per layer, not a replacement.

Serves 1-D convolutions of batch 1 without groups; asymmetric pads, strides and dilations are handled.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel
from .bound import BoundInput, binder
from .bound_epilogue import make_epilogue
from .conv import split_pads
from .fused import apply_epilogue, quantized_output


def _serves(op, inputs) -> bool:
    x, weight = inputs[0], inputs[1] if len(inputs) > 1 else None
    return (x is not None and weight is not None and len(x.shape) == 3 and len(weight.shape) == 3
            and x.shape[0] == 1 and op.groups == 1 and not getattr(op, "int8_input_scale", 0.0)
            and not getattr(op, "int8_output_scale", 0.0))


def _windows(x: torch.Tensor, kernel_size: int, op, steps: int) -> torch.Tensor:
    """[steps, channels * kernel_size]: the input's windows as rows (x [1, C, L], padded)."""
    begin, end = split_pads(op.pads)
    if begin[0] or end[0]:
        x = F.pad(x, [begin[0], end[0]])
    x = x.contiguous()
    channels, length = x.shape[1], x.shape[2]
    view = x.as_strided((steps, channels, kernel_size), (op.stride[0], length, op.dilation[0]))
    return view.reshape(steps, channels * kernel_size)


def _steps(op, length: int, kernel_size: int) -> int:
    begin, end = split_pads(op.pads)
    return (length + begin[0] + end[0] - op.dilation[0] * (kernel_size - 1) - 1) // op.stride[0] + 1


def convolve_as_gemm(op, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None,
                     kernel_size: int) -> torch.Tensor:
    """The convolution [1, O, steps] with `weight_t` the weight as [C * kernel_size, O]."""
    steps = _steps(op, x.shape[2], kernel_size)
    rows = _windows(x, kernel_size, op, steps)
    y = torch.mm(rows, weight_t) if bias is None else torch.addmm(bias, rows, weight_t)
    return y.t().contiguous().unsqueeze(0)


def _weight_t(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1).t()


@kernel(ops.Convolution, impl="torch_gemm", supports=_serves)
def convolution_gemm(op: ops.Convolution, inputs):
    x, weight, bias = (list(inputs) + [None])[:3]
    return [convolve_as_gemm(op, x, _weight_t(weight), bias, weight.shape[2])]


@kernel(ops.FusedConvolution, impl="torch_gemm", supports=_serves)
def fused_convolution_gemm(op: ops.FusedConvolution, inputs):
    x, weight, bias, residual, slope = (list(inputs) + [None] * 5)[:5]
    y = convolve_as_gemm(op, x, _weight_t(weight), bias, weight.shape[2])
    return [quantized_output(op, apply_epilogue(op, y, residual, slope))]


def _bound(op, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput], epilogue):
    x, weight, bias = (list(inputs) + [None] * 3)[:3]
    if (not _serves(op, inputs) or weight.value is None or (bias is not None and bias.value is None)
            or min(x.shape) < 0):
        return None
    weight_t = _weight_t(weight.value).contiguous()  # [C * kernel, O], made once
    bias_value, kernel_size = None if bias is None else bias.value, weight.shape[2]
    return lambda args: [epilogue(convolve_as_gemm(op, args[0], weight_t, bias_value, kernel_size), args)]


@binder(ops.Convolution, impl="torch_gemm")
def bind_convolution_gemm(op: ops.Convolution, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    return _bound(op, inputs, outputs, lambda y, args: y)


@binder(ops.FusedConvolution, impl="torch_gemm")
def bind_fused_convolution_gemm(op: ops.FusedConvolution, inputs: Sequence[BoundInput | None],
                                outputs: Sequence[BoundInput]):
    residual, slope = (list(inputs) + [None] * 5)[3:5]
    return _bound(op, inputs, outputs, make_epilogue(op, outputs[0], residual, slope))
