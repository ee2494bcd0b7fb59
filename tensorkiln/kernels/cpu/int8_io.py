"""INT8 activations between integer layers (the reference semantics of int8_input_scale / int8_output_scale).

On the CUDA target, where a quantized layer and the quantized layers reading its output all run integer kernels,
the builder links them (plan/integer_links.py): the producer stores its output as INT8 at the readers' input scale
(int8_output_scale) and the readers take that INT8 tensor as their input (int8_input_scale), as TensorRT keeps INT8
activations between INT8 layers. Where every reader of a quantize step runs an integer kernel but the producer
does not, the step goes and the readers read the float tensor, quantizing it as they load it. These helpers give the
portable kernels the same semantics, so that they remain the reference of such steps (and their shape and dtype
inference on the meta device): a layer with int8_input_scale computes on its input quantized at that scale (a no-op
on an input already on that grid, as a quantize step before it leaves it).
"""
from __future__ import annotations

import torch

INT8_MIN, INT8_MAX = -128, 127


def dequantized_input(op, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The input the layer computes on: an INT8 input times the layer's int8_input_scale, a float one quantized and
    dequantized at it (x / s rounded half to even, clipped, times s), in `dtype` (the weights'); x itself for a
    layer without int8_input_scale."""
    scale = getattr(op, "int8_input_scale", 0.0)
    if x is None or not scale:
        return x
    if x.dtype is not torch.int8:
        x = torch.round(x.float() / scale).clamp_(INT8_MIN, INT8_MAX)
    return x.to(dtype) * scale


def quantized_output(op, y: torch.Tensor) -> torch.Tensor:
    """The layer's result as stored: INT8 at int8_output_scale (rounded half to even and clipped, as the quantize
    step it replaces), else y itself."""
    scale = getattr(op, "int8_output_scale", 0.0)
    if not scale:
        return y
    return torch.round(y.float() / scale).clamp_(INT8_MIN, INT8_MAX).to(torch.int8)
