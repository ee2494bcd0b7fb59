"""INT8 tactics on the CPU: oneDNN's quantized convolution and matrix product (`torch.ops.onednn.qconv2d_pointwise`,
`qlinear_pointwise`: the kernels PyTorch's x86 Inductor quantization uses) for the layers an INT8 build quantized.

A quantized layer carries int8_input_scale s_x and its per-channel INT8 weights q_w and scales s_w as inputs 5 and 6
(ops/optimized.py, passes/quantize_int8.py). oneDNN takes the activation as UINT8 with a zero point, so the INT8 grid
value q_x = clip(round(x / s_x), -128, 127) is passed as q_x + 128 at zero point 128: the same integers. oneDNN
multiplies them with the weights exactly in INT32 and returns (q_x @ q_w) s_x s_w + bias in FP32; the activation,
residual and post activation follow in torch (apply_epilogue), but for a lone ReLU, which oneDNN runs together with
the requantize of an INT8 output (UINT8 at zero point 128: the INT8 grid with its top bit flipped). So the result is the simulated INT8 layer's (kernels/cpu/fused.py on
the quantize step's output) up to FP32 rounding, at a fraction of its time: on a 2-core x86 machine, 3x3 convolutions
of 128 channels at 28x28 took 0.09 ms against 0.9 ms in FP32. The tactic timer weighs them against the FP32 kernels.

The weights are packed for oneDNN once per input shape and kept on the INT8 weight tensor (as kernels/cpu/fused.py
keeps its packed FP32 weights), so they live exactly as long as the engine's weights.
"""
from __future__ import annotations

import functools
import warnings

import torch

from ...ir import ops
from ..integer import integer_kernel
from .conv import split_pads
from .fused import apply_epilogue
from .int8_io import quantized_output

INTEGER_INPUTS = 7  # x, weights, bias, residual, slope, INT8 weights, their scales
_PACKED = "_tensorkiln_onednn_int8_packed"  # attribute of an INT8 weight tensor: {key: packed weight}
ZERO_POINT = 128  # INT8 grid values as oneDNN's UINT8 activations


@functools.cache
def _available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops, "onednn")
            and hasattr(torch.ops.onednn, "qconv2d_pointwise") and hasattr(torch.ops.onednn, "qlinear_pointwise"))


def _operands_ok(op, inputs) -> bool:
    """int8_input_scale, a floating or INT8 input, INT8 weights and their int32-bit scales, and an epilogue
    apply_epilogue runs (PReLU with a slope; a residual of the output's shape is checked by the callers)."""
    if not getattr(op, "int8_input_scale", 0.0) or len(inputs) != INTEGER_INPUTS or not _available():
        return False
    x, q, scales = inputs[0], inputs[5], inputs[6]
    return (x is not None and q is not None and scales is not None
            and (x.dtype.is_floating or x.dtype.value == "int8") and q.dtype.value == "int8"
            and scales.dtype.value == "int32" and len(scales.shape) == 1 and (not op.prelu or inputs[4] is not None))


def _conv_ok(op, inputs) -> bool:
    """A 2-D convolution (grouped and depthwise too) with symmetric pads (oneDNN's padding is one value per side)."""
    if not _operands_ok(op, inputs) or len(op.stride) != 2:
        return False
    x, q = inputs[0], inputs[5]
    begin, end = split_pads(op.pads)
    return (len(x.shape) == 4 and len(q.shape) == 4 and x.shape[1] % op.groups == 0
            and q.shape[3] * op.groups == x.shape[1] and begin == end)


def _matmul_ok(op, inputs) -> bool:
    """A matrix product of any rows by a 2-D constant b (a fully connected layer or a GEMM)."""
    if not _operands_ok(op, inputs) or op.transpose_a:
        return False
    a, q = inputs[0], inputs[5]
    return len(a.shape) >= 2 and len(q.shape) == 2 and a.shape[-1] == q.shape[1]


def uint8_grid(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x's INT8 grid values (x / scale rounded half to even and clipped, as the quantize step computes) plus 128, as
    UINT8; an INT8 input (from a linked integer layer) is its own grid (plus 128 is a flip of the top bit). A NaN
    counts as 0, as in the GPU kernels."""
    if x.dtype is torch.int8:
        return x.view(torch.uint8).bitwise_xor(0x80)
    with warnings.catch_warnings():  # the quantized tensor is only the vectorized rounding; its data is taken out
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.nan_to_num(x.float(), nan=0.0), scale, ZERO_POINT,
                                         torch.quint8).int_repr()


def _as_int8(y: torch.Tensor) -> torch.Tensor:
    """oneDNN's UINT8 output at zero point 128 as the INT8 grid values the plan's INT8 tensors hold."""
    return y.view(torch.int8).bitwise_xor_(-128)


def _fused_relu(op) -> bool:
    """Whether oneDNN may run the whole epilogue: a ReLU or none. Its ReLU post-op turns NaN into 0 (ONNX's keeps
    NaN), but an integer product of INT8 inputs has no NaN to keep (finite weights: the build checked them)."""
    return (op.activation in (None, ops.ActivationType.RELU) and not op.prelu and not op.residual
            and op.post_activation is None)


def _weight_scales(inputs) -> torch.Tensor:
    return inputs[6].view(torch.float32)  # (the scales travel as the int32 bits of float32 values)


def _packed(q: torch.Tensor, key: tuple, pack) -> torch.Tensor:
    cache = getattr(q, _PACKED, None)
    if cache is None:
        cache = {}
        setattr(q, _PACKED, cache)
    if key not in cache:
        cache[key] = pack()
    return cache[key]


def _output(op) -> tuple[str, float, int, torch.dtype | None]:
    """oneDNN's post-op, output scale, zero point and dtype: the layer's ReLU and its requantize where oneDNN runs the
    whole epilogue (UINT8 at zero point 128 for an INT8 output), else an FP32 result for apply_epilogue."""
    if not _fused_relu(op):
        return "none", 1.0, 0, torch.float32
    attr = "relu" if op.activation is ops.ActivationType.RELU else "none"
    if op.int8_output_scale:
        return attr, op.int8_output_scale, ZERO_POINT, None
    return attr, 1.0, 0, torch.float32


def _zero_points(q: torch.Tensor) -> torch.Tensor:
    """The weights' zero points (symmetric: all 0), made once per INT8 weight tensor, not on every call."""
    return _packed(q, "zero_points", lambda: torch.zeros(q.shape[0], dtype=torch.long))


def _finish(op, y: torch.Tensor, inputs) -> list[torch.Tensor]:
    if y.dtype is torch.uint8:
        return [_as_int8(y)]
    if _fused_relu(op):
        return [y.to(inputs[1].dtype)]
    residual, slope = inputs[3], inputs[4]
    out = apply_epilogue(op, y.to(inputs[1].dtype), residual if op.residual else None, slope)
    return [quantized_output(op, out)]


def int8_convolution(op: ops.FusedConvolution, inputs) -> list[torch.Tensor]:
    x, _, bias, _, _, q, _ = inputs
    scale, (padding, _) = op.int8_input_scale, split_pads(op.pads)
    w_scales = _weight_scales(inputs)
    qx = uint8_grid(x, scale).contiguous(memory_format=torch.channels_last)
    geometry = (list(op.stride), list(padding), list(op.dilation))
    key = (tuple(x.shape), *map(tuple, geometry), scale, torch.get_num_threads())
    packed = _packed(q, key, lambda: torch.ops.onednn.qconv_prepack(
        q.permute(0, 3, 1, 2).contiguous(), w_scales, scale, ZERO_POINT, *geometry, op.groups, list(x.shape)))
    attr, out_scale, out_zero_point, out_dtype = _output(op)
    y = torch.ops.onednn.qconv2d_pointwise(
        qx, scale, ZERO_POINT, packed, w_scales, _zero_points(q),
        None if bias is None else bias.float(), *geometry, op.groups, out_scale, out_zero_point, out_dtype, attr, [],
        "")
    return _finish(op, y, inputs)


def int8_matmul(op: ops.FusedMatMul, inputs) -> list[torch.Tensor]:
    a, _, bias, _, _, q, _ = inputs
    scale = op.int8_input_scale
    w_scales = _weight_scales(inputs)
    rows = uint8_grid(a, scale).reshape(-1, a.shape[-1])
    key = ("linear", scale, torch.get_num_threads())
    packed = _packed(q, key, lambda: torch.ops.onednn.qlinear_prepack(q, [rows.shape[0], rows.shape[1]]))
    attr, out_scale, out_zero_point, out_dtype = _output(op)
    y = torch.ops.onednn.qlinear_pointwise(
        rows, scale, ZERO_POINT, packed, w_scales, _zero_points(q),
        None if bias is None else bias.float(), out_scale, out_zero_point, out_dtype, attr, [], "")
    return _finish(op, y.view(*a.shape[:-1], q.shape[0]), inputs)


integer_kernel(ops.FusedConvolution, "cpu", "onednn_int8", _conv_ok, int8_convolution)
integer_kernel(ops.FusedMatMul, "cpu", "onednn_int8", _matmul_ok, int8_matmul)
