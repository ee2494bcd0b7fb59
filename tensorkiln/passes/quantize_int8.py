"""INT8 quantization (simulated): each convolution and GEMM with constant weights reads its input quantized and
dequantized at the calibrated per-tensor scale, and its weights become their per-channel INT8 values times their
scales.

    x -> conv(W)    =>    x -> quantize(s_x) -> dequantize(s_x) -> conv(dequantize(quantize(W, s_W[k])))

The input's quantize/dequantize is written as the pointwise arithmetic it computes (fold_qdq.fake_quantize_layers:
x / s -> round -> clip(-128, 127) -> * s), which fuse_pointwise then makes one step.

Numerically this is what an INT8 kernel gives (int8 x int8 products summed exactly, then scaled by s_x * s_W[k];
bias, activation and residual in float, as TensorRT's epilogue). The builder runs this pass itself, after the
default pipeline (BatchNorm is folded and epilogues fused first, so the folded weights are the ones quantized),
with the scales calibration measured: constructed without scales it changes nothing.

With `integer_weights` (INT8 builds for either target), each fused 2-D convolution and fused GEMM (a 2-D constant b)
it quantizes also gets int8_input_scale and its INT8 weights and scales as inputs 5 and 6 (ops/optimized.py): the
integer kernels' operands, made once at build time; the tactic timer weighs them against the float kernels.
"""
from __future__ import annotations

import dataclasses
from typing import Collection, Mapping

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..quant.weights import fake_quantize_weights, quantize_weights
from .fold_qdq import fake_quantize_layers
from .manager import Pass, register_pass
from .pattern import make_constant

INT8_MIN, INT8_MAX = -128, 127

_CONVOLUTIONS = (ops.Convolution.KIND, ops.FusedConvolution.KIND, ops.FullyConnected.KIND)
_DECONVOLUTIONS = (ops.Deconvolution.KIND, ops.FusedDeconvolution.KIND)
_MATRIX_PRODUCTS = (ops.MatrixMultiply.KIND, ops.FusedMatMul.KIND)


def weight_channel_axis(layer: Layer) -> int | None:
    """The output-channel axis of the layer's constant weights (input 1), or None: not a layer this pass
    quantizes (no constant weights, or a kind without an INT8 form)."""
    if layer.kind not in _CONVOLUTIONS + _DECONVOLUTIONS + _MATRIX_PRODUCTS or len(layer.inputs) < 2:
        return None
    x, weights = layer.inputs[0], layer.inputs[1]
    if x is None or weights is None or not weights.is_constant or x.is_constant or not x.dtype.is_floating:
        return None
    if layer.kind in _CONVOLUTIONS:
        return 0  # [K, C/groups, *kernel] and fully connected [K, C]
    if layer.kind in _DECONVOLUTIONS:
        # [C, K/groups, *kernel]: with one group, axis 1 is the output channel; with more, an output channel is a
        # (group, axis-1 index) pair, and scales along axis 1 would be shared across groups
        return 1 if getattr(layer.op, "groups", 1) == 1 else None
    if len(weights.shape) < 2:
        return None
    return len(weights.shape) - (2 if layer.op.transpose_b else 1)  # b is [..., C, K], or [..., K, C] transposed


@register_pass
class QuantizeInt8(Pass):
    name = "quantize_int8"

    def __init__(self, scales: Mapping[str, float] | None = None, keep: Collection[str] = (),
                 integer_weights: bool = False):
        super().__init__()
        self.scales = dict(scales or {})
        self.keep = set(keep)  # layer names that stay in float (--int8-keep-fp16, sensitive layers)
        self.integer_weights = integer_weights  # attach the INT8 operands of the integer kernels

    def run(self, network: Network) -> bool:
        if not self.scales:
            return False
        dequantized: dict[int, Tensor] = {}  # one quantize/dequantize pair per tensor, shared by its readers
        layers: list[Layer] = []
        for layer in network.layers:
            axis = weight_channel_axis(layer)
            if axis is not None:
                layers.extend(self._quantize(network, layer, axis, dequantized))
            layers.append(layer)
        network.layers = layers
        return bool(self.counts.get("quantized"))

    def _quantize(self, network: Network, layer: Layer, axis: int, dequantized: dict[int, Tensor]) -> list[Layer]:
        """Rewrite `layer` to read quantized values; the new layers to place before it."""
        x = layer.inputs[0]
        if layer.name in self.keep:
            self.count("kept_float")
            self.log.append(f"{layer.name}: kept in float (requested)")
            return []
        scale = self.scales.get(x.name)
        if scale is None or not np.isfinite(scale) or scale <= 0:
            self.count("uncalibrated")
            self.log.append(f"{layer.name}: its input {x.name!r} has no calibrated scale: kept in float")
            return []
        inserted = []
        if id(x) not in dequantized:
            scale_tensor = make_constant(network, np.array(scale, np.float32), f"{x.name}_scale")
            inserted = fake_quantize_layers(network, x, scale_tensor, 0, INT8_MIN, INT8_MAX, f"{x.name}_int8")
            dequantized[id(x)] = inserted[-1].outputs[0]
        weights = layer.inputs[1]
        layer.inputs[0] = dequantized[id(x)]
        layer.inputs[1] = make_constant(network, fake_quantize_weights(weights.value, axis), f"{weights.name}_int8")
        if self.integer_weights and _attach_integer_weights(network, layer, weights.value, axis, scale):
            self.count("integer_operands")
        self.count("quantized")
        self.log.append(f"{layer.name}: input {x.name!r} at scale {scale:.6g}, weights per channel (axis {axis})")
        return inserted


def _attach_integer_weights(network: Network, layer: Layer, weights: np.ndarray, axis: int, scale: float) -> bool:
    """Give a fused convolution or GEMM its integer kernels' operands (see the module's docstring): INT8 weights with
    the output channel first and the reduction contiguous (a convolution's [K, R, S, C], as NHWC activations are
    read; a GEMM's b as [N, K]) and their scales. False where it has no integer
    kernel: transposed or non-2-D convolutions, a batched or transposed-a GEMM. (Grouped convolutions get them: the
    CPU's oneDNN kernel takes groups, the GPU's integer kernels leave such layers to the float ones.)"""
    if layer.kind == ops.FusedConvolution.KIND:
        if weights.ndim != 4 or len(layer.op.stride) != 2:
            return False
    elif layer.kind != ops.FusedMatMul.KIND or weights.ndim != 2 or layer.op.transpose_a:
        return False
    q, scales = quantize_weights(weights, axis)
    if layer.kind == ops.FusedConvolution.KIND:
        q = q.transpose(0, 2, 3, 1)  # [K, C, R, S] -> [K, R, S, C]
    elif axis != 0:
        q = q.T  # b [K, N] -> [N, K]
    base = layer.inputs[1].name
    layer.inputs[:] = (list(layer.inputs) + [None] * 5)[:5] + [
        make_constant(network, np.ascontiguousarray(q), f"{base}_q"),
        # the scales as the bits of their float32 values: the runtime casts a step's floating inputs to its compute
        # dtype (FP16), which would round them (and flush the smallest to subnormals)
        make_constant(network, scales.astype(np.float32).view(np.int32), f"{base}_q_scale")]
    layer.op = dataclasses.replace(layer.op, int8_input_scale=float(scale))
    return True
