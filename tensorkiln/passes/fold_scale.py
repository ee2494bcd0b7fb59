"""Scale folding: a per-channel affine map y * s + t right after a layer with constant weights is folded into
those weights and bias (TensorRT's conv + batchnorm folding).

    conv(x, W, b) -> scale(s, t)    =>    conv(x, W * s[k], b * s + t)

The affine map is a `scale` layer (the ONNX importer writes an inference BatchNormalization as one, Caffe's
BatchNorm and Scale too) or an elementwise Mul, Div, Add or Sub by a constant (BatchNormalization spelled out,
Gemm's alpha, a bias written as an Add). Its coefficients must be one per output channel (or one in all): for
a (de)convolution the channel is dim 1 (shape [K,1,1] or [1,K,1,1]), for a fully connected layer or a matrix
multiply by a constant 2-D matrix the last dim ([K]). The producer's output must be read by the map alone and
be no network output; the folded layer takes over the map's output tensor (and its name).

A matrix multiply has no bias: its scale is folded into the matrix, its shift into the bias Add that follows
it (which this pass treats as part of the producer) or, where there is none, the map becomes that Add.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..ir.ops import ElementWiseOperation as E
from ..ir.ops import ScaleMode
from .manager import Pass, register_pass
from .merge_shuffles import fused_names
from .pattern import Uses, make_constant, splice

_WEIGHTED = (ops.Convolution.KIND, ops.Deconvolution.KIND, ops.FullyConnected.KIND, ops.MatrixMultiply.KIND)

Affine = tuple[np.ndarray, np.ndarray]  # per-channel scale and shift, float64 [K]


@dataclasses.dataclass(frozen=True)
class _Target:
    layer: Layer  # the layer with constant weights
    bias_add: Layer | None  # a matrix multiply's bias Add (elementwise SUM with a per-channel constant)
    tail: Tensor  # the tensor the affine map reads: the layer's output, or the bias Add's
    axis: int  # the channel dim of `tail`

    @property
    def channels(self) -> int:
        return self.tail.shape[self.axis]


def _per_channel(value: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """`value` as one coefficient per channel where it broadcasts along `axis` of a rank-`rank` tensor only."""
    if value.ndim > rank or value.size == 0:
        return None
    padded = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if any(d != 1 for i, d in enumerate(padded.shape) if i != axis) or padded.shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(padded.reshape(-1).astype(np.float64), (channels,))


def _scale_layer(layer: Layer, target: _Target) -> Affine | None:
    x, scale, shift, power = (list(layer.inputs) + [None] * 3)[:4]
    if x is not target.tail or (power is not None and not np.all(power.value == 1)):
        return None
    found = [_coefficients(tensor, layer.op, target, default) for tensor, default in ((scale, 1.0), (shift, 0.0))]
    return None if found[0] is None or found[1] is None else (found[0], found[1])


def _coefficients(tensor: Tensor | None, op: ops.Scale, target: _Target, default: float) -> np.ndarray | None:
    if tensor is None:
        return np.full(target.channels, default)
    value, rank = tensor.value, len(target.tail.shape)
    if op.mode is not ScaleMode.CHANNEL:  # uniform or elementwise: broadcast from the trailing dims
        return _per_channel(value, rank, target.axis, target.channels)
    if op.channel_axis % rank != target.axis or value.size not in (1, target.channels):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (target.channels,))


def _elementwise(operation: E, commutative: bool, affine: Callable[[np.ndarray], Affine]):
    """y (op) c (and c (op) y where `commutative`), c constant per channel, as an affine map of y."""

    def find(layer: Layer, target: _Target) -> Affine | None:
        if layer.op.operation is not operation:
            return None
        a, b = layer.inputs
        orders = ((a, b), (b, a)) if commutative else ((a, b),)
        for y, c in orders:
            if y is target.tail and c.is_constant and c.dtype == y.dtype:
                per = _per_channel(c.value, len(y.shape), target.axis, target.channels)
                if per is not None:
                    return affine(per)
        return None

    return find


def _reciprocal(per: np.ndarray) -> Affine | None:
    return None if np.any(per == 0) else (1.0 / per, np.zeros_like(per))


def _negated_plus(layer: Layer, target: _Target) -> Affine | None:
    if layer.op.operation is not E.SUB or layer.inputs[1] is not target.tail or not layer.inputs[0].is_constant:
        return None
    c, rank = layer.inputs[0], len(target.tail.shape)
    per = _per_channel(c.value, rank, target.axis, target.channels) if c.dtype == target.tail.dtype else None
    return None if per is None else (-np.ones_like(per), per)


def _divide(layer: Layer, target: _Target) -> Affine | None:
    found = _elementwise(E.DIV, False, lambda c: (c, None))(layer, target)
    return None if found is None else _reciprocal(found[0])


@dataclasses.dataclass(frozen=True)
class Fold:
    name: str  # the rewrite counter (completed by the producer's kind)
    kind: str  # the kind of the affine layer
    affine: Callable[[Layer, _Target], "Affine | None"]


RULES = [
    # conv -> scale (BatchNormalization, Caffe BatchNorm/Scale)  =>  conv with folded weights and bias
    Fold("scale", ops.Scale.KIND, _scale_layer),
    # conv -> y * c (or c * y)  =>  conv with weights and bias times c
    Fold("mul", ops.ElementWise.KIND, _elementwise(E.PROD, True, lambda c: (c, np.zeros_like(c)))),
    # conv -> y / c  =>  conv with weights and bias divided by c (c has no zero)
    Fold("div", ops.ElementWise.KIND, _divide),
    # conv -> y + c (or c + y)  =>  conv with bias + c
    Fold("add", ops.ElementWise.KIND, _elementwise(E.SUM, True, lambda c: (np.ones_like(c), c))),
    # conv -> y - c  =>  conv with bias - c
    Fold("sub", ops.ElementWise.KIND, _elementwise(E.SUB, False, lambda c: (np.ones_like(c), -c))),
    # conv -> c - y  =>  conv with weights and bias negated, plus c
    Fold("sub_from", ops.ElementWise.KIND, _negated_plus),
]


# ---- the producer ---------------------------------------------------------------------------------------------
def _constant_weights(layer: Layer) -> bool:
    weights = [t for t in layer.inputs[1:] if t is not None]
    if not weights or not all(t.is_constant for t in weights) or not layer.outputs[0].dtype.is_floating:
        return False
    if layer.kind == ops.MatrixMultiply.KIND:
        return len(layer.inputs[1].shape) == 2 and len(layer.outputs[0].shape) >= 1
    return True


def _target(tail: Tensor, uses: Uses) -> _Target | None:
    """The layer with constant weights whose result `tail` is (possibly through a matrix multiply's bias Add)."""
    layer = tail.producer
    if layer is None or len(layer.outputs) != 1:
        return None
    bias_add = None
    if layer.kind == ops.ElementWise.KIND and layer.op.operation is E.SUM:
        bias_add, layer = layer, next((t.producer for t in layer.inputs if not t.is_constant), None)
        if layer is None or layer.kind != ops.MatrixMultiply.KIND:
            return None
        if uses.single_consumer(layer.outputs[0]) is not bias_add:
            return None
    if layer.kind not in _WEIGHTED or not _constant_weights(layer):
        return None
    axis = 1 if layer.kind in (ops.Convolution.KIND, ops.Deconvolution.KIND) else len(tail.shape) - 1
    target = _Target(layer, bias_add, tail, axis)
    if bias_add is not None and _bias_of_add(target) is None:
        return None
    return target


def _bias_of_add(target: _Target) -> np.ndarray | None:
    """The per-channel constant of a matrix multiply's bias Add."""
    add = target.bias_add
    product = target.layer.outputs[0]
    other = add.inputs[1] if add.inputs[0] is product else add.inputs[0]
    if other is product or not other.is_constant or other.dtype != product.dtype or product.shape != target.tail.shape:
        return None
    return _per_channel(other.value, len(product.shape), target.axis, target.channels)


# ---- the rewrite ------------------------------------------------------------------------------------------
def _scaled_weight(layer: Layer, scale: np.ndarray) -> np.ndarray:
    weight = layer.inputs[1].value
    compute = np.promote_types(weight.dtype, np.float32)  # float32 products round once, as float64 ones would
    w, scale = weight.astype(compute, copy=False), scale.astype(compute)
    if layer.kind == ops.Convolution.KIND:  # [K, C/groups, *k]
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    elif layer.kind == ops.Deconvolution.KIND:  # [C, K/groups, *k]: output channel k is (group, k mod K/groups)
        groups, per_group = layer.op.groups, w.shape[1]
        grouped = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
        factor = scale.reshape((groups, 1, per_group) + (1,) * (w.ndim - 2))
        w = (grouped * factor).reshape(w.shape)
    elif layer.kind == ops.FullyConnected.KIND or layer.op.transpose_b:  # [K, C]
        w = w * scale[:, None]
    else:  # matrix multiply by [C, K]
        w = w * scale[None, :]
    return w.astype(weight.dtype, copy=False)


def _fold(network: Network, target: _Target, affine_layer: Layer, scale: np.ndarray, shift: np.ndarray) -> None:
    """Scale the weights; the layer (or the matrix multiply's bias Add) takes over the affine layer's output."""
    layer, out = target.layer, affine_layer.outputs[0]
    dtype = target.tail.dtype.numpy
    layer.inputs[1] = make_constant(network, _scaled_weight(layer, scale), f"{layer.name}.weight")
    if layer.kind != ops.MatrixMultiply.KIND:
        inputs = (list(layer.inputs) + [None])[:3]
        bias = np.zeros(target.channels) if inputs[2] is None else inputs[2].value.reshape(-1).astype(np.float64)
        if inputs[2] is not None or np.any(shift != 0):
            inputs[2] = make_constant(network, (bias * scale + shift).astype(dtype), f"{layer.name}.bias")
        layer.inputs = inputs
        _take_over(layer, out)
    elif target.bias_add is not None:
        add = target.bias_add
        bias = (_bias_of_add(target) * scale + shift).astype(dtype)
        add.inputs = [layer.outputs[0], make_constant(network, bias, f"{add.name}.bias")]
        _take_over(add, out)
        layer = add
    elif np.any(shift != 0):  # the map becomes the bias Add
        affine_layer.op = ops.ElementWise(E.SUM)
        bias = make_constant(network, shift.astype(dtype), f"{affine_layer.name}.bias")
        affine_layer.inputs = [layer.outputs[0], bias]
        return
    else:
        _take_over(layer, out)
    layer.fused_from = (*fused_names(layer), *fused_names(affine_layer))
    splice(network, [affine_layer], [], before=affine_layer)


def _nothing_to_fold(target: _Target, affine: Affine) -> bool:
    return target.layer.kind == ops.MatrixMultiply.KIND and target.bias_add is None and bool(np.all(affine[0] == 1))


def _take_over(layer: Layer, out: Tensor) -> None:
    """`layer` writes `out` (the folded map's output, which keeps its name and readers)."""
    layer.outputs = [out]
    out.producer = layer


@register_pass
class FoldScale(Pass):
    name = "fold_scale"

    def run(self, network: Network) -> bool:
        changed = False
        uses = Uses(network)
        for layer in list(network.layers):
            found = self._match(layer, uses)
            if found is None:
                continue
            rule, target, (scale, shift) = found
            _fold(network, target, layer, scale, shift)
            self.count(f"{rule.name}_into_{target.layer.kind}")
            self.log.append(f"{layer.name} folded into {target.layer.name}")
            uses = Uses(network)
            changed = True
        return changed

    @staticmethod
    def _match(layer: Layer, uses: Uses) -> tuple[Fold, _Target, Affine] | None:
        for rule in RULES:
            if rule.kind != layer.kind or len(layer.outputs) != 1:
                continue
            for tail in {id(t): t for t in layer.inputs if t is not None and not t.is_constant}.values():
                target = _target(tail, uses) if uses.single_consumer(tail) is layer else None
                out = layer.outputs[0]
                if target is None or (out.shape, out.dtype) != (tail.shape, tail.dtype):
                    continue
                affine = rule.affine(layer, target)
                if affine is not None and _nothing_to_fold(target, affine):
                    continue  # a matrix multiply's bias Add: it stays as it is
                if affine is not None and np.all(np.isfinite(affine[0])) and np.all(np.isfinite(affine[1])):
                    return rule, target, affine
        return None
