"""Explicit quantization (ONNX QuantizeLinear/DequantizeLinear models): Q/DQ pairs that stand between a layer with
constant weights and the BatchNorm (or per-channel scale) that follows it are removed, so that fold_scale can fold
the BatchNorm into the weights, as TensorRT folds it before placing the quantization.

    conv(W) -> quantize(s) -> dequantize(s) -> batchnorm    =>    conv(W) -> batchnorm    (then conv(W * g, ...))

onnxruntime's quantize_static without its pre-processing puts a pair on the convolution's output and another on
the BatchNorm's; the second stays and quantizes the folded layer's output, so the result differs from
onnxruntime's own run of the model by at most about one step of that second quantizer. Weights written as
dequantize(int8 constant, per-channel scales) need no rule: fold_constants turns them into their float values.

Every other pair with one scale and one zero point (per tensor) becomes the pointwise arithmetic it computes,

    quantize(s, z) -> dequantize(s, z)    =>    x / s -> round -> clip(qmin - z, qmax - z) -> * s

which fuse_pointwise makes one fused_pointwise step (one generated kernel on a GPU) instead of a quantize and a
dequantize step with an 8-bit tensor between them. The values are the same to the bit: round(x / s) + z clipped
to [qmin, qmax], minus z, times s, is the clip of round(x / s) to [qmin - z, qmax - z], times s.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..ir.ops import ElementWiseOperation as E
from .manager import Pass, register_pass
from .pattern import Uses, make_layer, replace_uses, splice

_WEIGHTED = (ops.Convolution.KIND, ops.Deconvolution.KIND, ops.FullyConnected.KIND, ops.MatrixMultiply.KIND)
# Mul and Div only: a pair before an Add may be a ReLU in disguise (onnxruntime drops a Relu whose output quantizer's
# zero point is the type's minimum, so the clamp of Q does the ReLU's work), and its removal would lose the ReLU
_AFFINE_ELEMENTWISE = (E.PROD, E.DIV)


def _same_constant(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (a.is_constant and b.is_constant and a.dtype == b.dtype
                      and np.array_equal(np.asarray(a.value), np.asarray(b.value)))


def _zero_point_inside(quantize: Layer) -> bool:
    """Whether the quantizer's zero point lies strictly inside its type's range: then the pair only rounds (and
    clips far outliers); at an end of the range it also clamps at zero, a ReLU that must stay."""
    zero_point = quantize.inputs[2] if len(quantize.inputs) > 2 else None
    if zero_point is None:
        return quantize.op.output_dtype.value in ("int8", "int16", "int32")  # zero point 0 of a signed type
    if not zero_point.is_constant or not np.issubdtype(zero_point.dtype.numpy, np.integer):
        return False
    info = np.iinfo(zero_point.dtype.numpy)
    values = np.asarray(zero_point.value)
    return bool(np.all((values > info.min) & (values < info.max)))


def _is_affine_map(layer: Layer, reads: Tensor) -> bool:
    """A layer fold_scale may fold into the producer of `reads`: a scale layer, or Mul/Add/Sub/Div by a constant."""
    if layer.kind == ops.Scale.KIND:
        return layer.inputs[0] is reads
    if layer.kind == ops.ElementWise.KIND and layer.op.operation in _AFFINE_ELEMENTWISE:
        other = [t for t in layer.inputs if t is not reads]
        return len(other) == 1 and other[0] is not None and other[0].is_constant
    return False


def fake_quantize_layers(network: Network, x: Tensor, scale: Tensor, zero_point: int, low: int, high: int,
                         base: str, output: Tensor | None = None) -> list[Layer]:
    """The layers of dequantize(quantize(x)) at a per-tensor `scale` (a float scalar constant) and `zero_point`,
    quantized values in [low, high]; the last writes `output` where given."""
    divided = make_layer(network, ops.ElementWise(E.DIV), [x, scale], f"{base}_divide")
    rounded = make_layer(network, ops.Unary(ops.UnaryOperation.ROUND), divided.outputs, f"{base}_round")
    clipped = make_layer(network, ops.Activation(ops.ActivationType.CLIP, float(low - zero_point),
                                                 float(high - zero_point)), rounded.outputs, f"{base}_clip")
    scaled = make_layer(network, ops.ElementWise(E.PROD), [clipped.outputs[0], scale], f"{base}_rescale",
                        None if output is None else [output])
    return [divided, rounded, clipped, scaled]


def _per_tensor_pair(quantize: Layer, uses: Uses) -> tuple[Layer, int, int, int] | None:
    """(dequantize, zero point, low, high) where `quantize` feeds only a dequantize of the same one scale and zero
    point, in float32."""
    if quantize.kind != ops.QuantizeLinear.KIND or uses.is_output(quantize.outputs[0]):
        return None
    readers = uses.consumers(quantize.outputs[0])
    if len(readers) != 1 or readers[0].kind != ops.DequantizeLinear.KIND:
        return None
    dequantize = readers[0]
    (x, scale, zero_point), (_, dq_scale, dq_zero_point) = ((list(layer.inputs) + [None])[:3]
                                                           for layer in (quantize, dequantize))
    if not (_same_constant(scale, dq_scale) and _same_constant(zero_point, dq_zero_point)):
        return None
    if scale is None or not scale.is_constant or scale.numel != 1 or scale.dtype.value != "float32":
        return None
    if x.dtype.value != "float32" or (zero_point is not None and (not zero_point.is_constant or zero_point.numel != 1)):
        return None
    if dequantize.outputs[0].dtype.value != "float32":
        return None
    dtype = (zero_point.dtype if zero_point is not None else quantize.op.output_dtype).numpy
    if not np.issubdtype(dtype, np.integer):
        return None  # FP8 quantization rounds to a float grid, not to integers
    info = np.iinfo(dtype)
    zero = 0 if zero_point is None else int(np.asarray(zero_point.value).reshape(-1)[0])
    return dequantize, zero, int(info.min), int(info.max)


@register_pass
class FoldQDQ(Pass):
    name = "fold_qdq"

    def run(self, network: Network) -> bool:
        uses = Uses(network)
        removed: set[int] = set()
        for quantize in network.layers:
            pair = self._removable_pair(quantize, uses)
            if pair is None:
                continue
            dequantize = pair
            # weighted layer -> quantize -> dequantize -> affine map  =>  weighted layer -> affine map
            replace_uses(network, dequantize.outputs[0], quantize.inputs[0])
            removed.update((id(quantize), id(dequantize)))
            self.count("pair_before_scale")
            self.log.append(f"{quantize.name} + {dequantize.name}: removed so that "
                            f"{quantize.inputs[0].producer.name} folds the affine map after it")
        network.layers = [layer for layer in network.layers if id(layer) not in removed]
        return self._pairs_to_pointwise(network) or bool(removed)

    def _pairs_to_pointwise(self, network: Network) -> bool:
        uses = Uses(network)
        changed = False
        for quantize in list(network.layers):
            found = _per_tensor_pair(quantize, uses)
            if found is None:
                continue
            dequantize, zero, low, high = found
            # quantize(s, z) -> dequantize(s, z)  =>  x / s -> round -> clip(low - z, high - z) -> * s
            layers = fake_quantize_layers(network, quantize.inputs[0], quantize.inputs[1], zero, low, high,
                                          quantize.name, dequantize.outputs[0])
            splice(network, (quantize, dequantize), layers, quantize)
            self.count("pair_to_pointwise")
            changed = True
        return changed

    @staticmethod
    def _removable_pair(quantize: Layer, uses: Uses) -> Layer | None:
        if quantize.kind != ops.QuantizeLinear.KIND:
            return None
        x = quantize.inputs[0]
        producer = x.producer
        if producer is None or producer.kind not in _WEIGHTED or len(producer.inputs) < 2:
            return None
        if producer.inputs[1] is None or not producer.inputs[1].is_constant:
            return None
        if uses.consumers(x) != [quantize] or uses.is_output(x) or not _zero_point_inside(quantize):
            return None
        readers = uses.consumers(quantize.outputs[0])
        if len(readers) != 1 or readers[0].kind != ops.DequantizeLinear.KIND or uses.is_output(quantize.outputs[0]):
            return None
        dequantize = readers[0]
        padded = (list(quantize.inputs) + [None])[:3], (list(dequantize.inputs) + [None])[:3]
        if quantize.op.axis != dequantize.op.axis or not all(_same_constant(a, b) for a, b in
                                                              zip(padded[0][1:], padded[1][1:])):
            return None
        y = dequantize.outputs[0]
        followers = uses.consumers(y)
        if uses.is_output(y) or not followers or not all(_is_affine_map(layer, y) for layer in followers):
            return None
        return dequantize
