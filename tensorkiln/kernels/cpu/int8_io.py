"""INT8 activations between integer layers (the reference semantics of int8_input_scale / int8_output_scale).

On the CUDA target, where a quantized layer and the quantized layers reading its output all run integer kernels,
the builder links them (plan/integer_links.py): the producer stores its output as INT8 at the readers' input scale
(int8_output_scale) and the readers take that INT8 tensor as their input (int8_input_scale), as TensorRT keeps INT8
activations between INT8 layers. These helpers give the portable kernels the same semantics, so that they remain
the reference of such steps (and their shape and dtype inference on the meta device).
"""
from __future__ import annotations

import torch

INT8_MIN, INT8_MAX = -128, 127


def dequantized_input(op, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x as float: an INT8 input times the layer's int8_input_scale, in `dtype` (the weights'); else x itself."""
    scale = getattr(op, "int8_input_scale", 0.0)
    if x is None or x.dtype is not torch.int8 or not scale:
        return x
    return x.to(dtype) * scale


def quantized_output(op, y: torch.Tensor) -> torch.Tensor:
    """The layer's result as stored: INT8 at int8_output_scale (rounded half to even and clipped, as the quantize
    step it replaces), else y itself."""
    scale = getattr(op, "int8_output_scale", 0.0)
    if not scale:
        return y
    return torch.round(y.float() / scale).clamp_(INT8_MIN, INT8_MAX).to(torch.int8)
