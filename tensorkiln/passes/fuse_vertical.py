"""Vertical fusion: a convolution, deconvolution, matrix multiply or fully connected layer and the pointwise layers
that follow it become one fused layer, so that no intermediate tensor travels through memory.

    pad(0) -> conv -> add(bias) -> activation -> add(residual) -> activation
        =>  fused_convolution(x, kernel, bias, residual)   y = post_act(act(conv(x) + bias) + residual)

What a chain may take in, in order (each step optional; see ops.FusedConvolution for the epilogue fields):
  - a constant-zero pad of the spatial dims before a convolution (folded into the convolution's pads);
  - the layer's own bias, and Adds of a per-channel constant (per last-dim feature for matrix products);
  - one activation of any ActivationType, a PReLU, or x * sigmoid(x) / x * hard_sigmoid(x) written as two layers
    (SiLU, hard-swish);
  - an Add of a residual tensor of exactly the output's shape, then one more activation.
Every tensor inside a chain must have one reader and be no network output: nothing outside may lose a value it
reads. The fused layer takes over the last layer's output tensor (name, consumers, network output).

A convolution with a bias (a BatchNorm folded by fold_scale leaves one) always becomes a fused convolution, and a
fully connected layer or Gemm with a bias a fused matmul, so that the faster targets serve one kind each.
Names are tracked through `fused_from`: the log reads "conv1 + bn1 + relu1 -> conv1.fused".
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..ir.ops import ActivationType as A
from ..ir.ops import ElementWiseOperation as E
from .manager import Pass, register_pass
from .pattern import Uses, make_constant, make_layer, splice

_HEADS = {ops.Convolution.KIND, ops.Deconvolution.KIND, ops.MatrixMultiply.KIND, ops.FullyConnected.KIND}
_CHANNEL_FIRST = {ops.Convolution.KIND, ops.Deconvolution.KIND}  # bias per dim 1; matrix products: the last dim
_SIGMOID_OF_SWISH = {A.SIGMOID: A.SILU, A.HARD_SIGMOID: A.HARD_SWISH}  # x * gate(x) => the fused activation


@dataclasses.dataclass
class _Chain:
    """What has been gathered so far behind one head layer."""
    head: Layer
    layers: list[Layer]  # every layer the fused one replaces, in network order
    tensor: Tensor  # the chain's current end
    x: Tensor
    pads: tuple[int, ...] | None = None  # a convolution's pads, after folding a pad layer
    bias: Tensor | None = None
    bias_terms: list[np.ndarray] = dataclasses.field(default_factory=list)  # constants added after the layer
    epilogue: dict = dataclasses.field(default_factory=dict)  # fields of the fused op
    slope: Tensor | None = None
    residual: Tensor | None = None
    parts: list[str] = dataclasses.field(default_factory=list)  # what was fused, for the counters


def _names(layer: Layer) -> tuple[str, ...]:
    """The original layer names behind `layer` (an earlier pass may have merged some already)."""
    return tuple(getattr(layer, "fused_from", ()) or (layer.name,))


def _next(uses: Uses, tensor: Tensor) -> Layer | None:
    reader = uses.single_consumer(tensor)
    return reader if reader is not None and len(reader.outputs) == 1 else None


# ---- the steps of a chain -----------------------------------------------------------------------------------
def _fold_pad(chain: _Chain, uses: Uses) -> None:
    # pad(x, zeros on the spatial dims) -> conv  =>  conv with larger pads
    pad = chain.x.producer
    if chain.head.kind != ops.Convolution.KIND or pad is None or pad.kind != ops.Pad.KIND:
        return
    rank, op = len(chain.x.shape), pad.op
    if op.mode is not ops.PaddingMode.CONSTANT or op.value != 0.0 or min(op.pads) < 0 or len(op.pads) != 2 * rank:
        return
    if any(op.pads[i] for i in (0, 1, rank, rank + 1)) or _next(uses, chain.x) is not chain.head:
        return
    spatial = rank - 2
    conv_pads = chain.head.op.pads
    begin = tuple(c + p for c, p in zip(conv_pads[:spatial], op.pads[2:rank]))
    end = tuple(c + p for c, p in zip(conv_pads[spatial:], op.pads[rank + 2:]))
    chain.pads, chain.x = begin + end, pad.inputs[0]
    chain.layers.insert(0, pad)
    chain.parts.append("pad")


def _bias_value(chain: _Chain, constant: Tensor) -> np.ndarray | None:
    """`constant` as one value per output channel ([K]), if adding it adds that per channel."""
    out = chain.tensor
    value, rank = constant.value, len(out.shape)
    if constant.dtype != out.dtype or value.ndim > rank or rank == 0:
        return None
    padded = value.reshape((1,) * (rank - value.ndim) + value.shape)
    axis = 1 if chain.head.kind in _CHANNEL_FIRST else rank - 1
    if rank <= axis or any(d != 1 for i, d in enumerate(padded.shape) if i != axis):
        return None
    width = out.shape[axis]
    if padded.shape[axis] not in (1, width):
        return None
    return np.broadcast_to(padded.reshape(-1), (width,)).astype(value.dtype)


def _take_bias_adds(chain: _Chain, uses: Uses) -> None:
    # layer -> add(per-channel constant)  =>  layer with (a larger) bias
    if chain.bias is not None and not chain.bias.is_constant:
        return
    while (add := _next(uses, chain.tensor)) is not None and add.kind == ops.ElementWise.KIND:
        if add.op.operation not in (E.SUM, E.SUB) or add.outputs[0].shape != chain.tensor.shape:
            return
        other = add.inputs[1] if add.inputs[0] is chain.tensor else add.inputs[0]
        if other is chain.tensor or not other.is_constant or (add.op.operation is E.SUB and add.inputs[1] is not other):
            return
        value = _bias_value(chain, other)
        if value is None:
            return
        chain.bias_terms.append(-value if add.op.operation is E.SUB else value)
        chain.layers.append(add)
        chain.tensor = add.outputs[0]
        chain.parts.append("bias_add")


def _take_activation(chain: _Chain, uses: Uses) -> None:
    reader = _next(uses, chain.tensor)
    if reader is not None and reader.kind == ops.Activation.KIND:
        # layer -> activation  =>  layer with activation
        chain.epilogue.update(activation=reader.op.type, alpha=reader.op.alpha, beta=reader.op.beta)
        _advance(chain, reader, "activation")
    elif reader is not None and reader.kind == ops.ParametricReLU.KIND and reader.inputs[0] is chain.tensor:
        # layer -> prelu(slope)  =>  layer with prelu (the slope becomes an input)
        slope = reader.inputs[1]
        # per-channel constant slopes only: the fused kernels of the other targets read one slope per channel
        per_channel = slope.is_constant and _bias_value(chain, slope) is not None
        if reader.outputs[0].shape == chain.tensor.shape and per_channel:
            chain.epilogue.update(prelu=True)
            chain.slope = slope
            _advance(chain, reader, "prelu")
    elif reader is None:
        _take_swish(chain, uses)


def _take_swish(chain: _Chain, uses: Uses) -> None:
    # layer -> x * sigmoid(x)  =>  layer with silu;  x * hard_sigmoid(x) (1/6, 1/2)  =>  layer with hard_swish
    out = chain.tensor
    readers = uses.consumers(out)
    if uses.is_output(out) or len(readers) != 2 or any(len(r.outputs) != 1 for r in readers):
        return
    gate = next((r for r in readers if r.kind == ops.Activation.KIND and r.op.type in _SIGMOID_OF_SWISH), None)
    product = next((r for r in readers if r is not gate), None)
    if gate is None or product is None or _next(uses, gate.outputs[0]) is not product:
        return
    if product.kind != ops.ElementWise.KIND or product.op.operation is not E.PROD:
        return
    if {id(t) for t in product.inputs} != {id(out), id(gate.outputs[0])} or product.outputs[0].shape != out.shape:
        return
    if gate.op.type is A.HARD_SIGMOID and not np.allclose((gate.op.alpha, gate.op.beta), (1 / 6, 0.5), rtol=1e-4):
        return
    chain.epilogue.update(activation=_SIGMOID_OF_SWISH[gate.op.type])
    chain.layers.append(gate)
    _advance(chain, product, _SIGMOID_OF_SWISH[gate.op.type].value)


def _take_residual(chain: _Chain, uses: Uses) -> None:
    # layer -> add(residual of the same shape) [-> activation]  =>  layer with residual [and post activation]
    add = _next(uses, chain.tensor)
    if add is None or add.kind != ops.ElementWise.KIND or add.op.operation is not E.SUM:
        return
    other = add.inputs[1] if add.inputs[0] is chain.tensor else add.inputs[0]
    out = chain.tensor
    if other is out or other.shape != out.shape or other.dtype != out.dtype or add.outputs[0].shape != out.shape:
        return
    chain.residual = other
    chain.epilogue.update(residual=True)
    _advance(chain, add, "residual")
    post = _next(uses, chain.tensor)
    if post is not None and post.kind == ops.Activation.KIND:
        chain.epilogue.update(post_activation=post.op.type, post_alpha=post.op.alpha, post_beta=post.op.beta)
        _advance(chain, post, "post_activation")


def _advance(chain: _Chain, layer: Layer, part: str) -> None:
    chain.layers.append(layer)
    chain.tensor = layer.outputs[0]
    chain.parts.append(part)


def _gather(head: Layer, uses: Uses) -> _Chain | None:
    if head.kind not in _HEADS or len(head.outputs) != 1 or not head.outputs[0].dtype.is_floating:
        return None
    own_bias = (list(head.inputs) + [None] * 3)[2] if head.kind != ops.MatrixMultiply.KIND else None
    chain = _Chain(head, [head], head.outputs[0], head.inputs[0], bias=own_bias)
    _fold_pad(chain, uses)
    _take_bias_adds(chain, uses)
    _take_activation(chain, uses)
    _take_residual(chain, uses)
    worth = len(chain.layers) > 1 or (chain.bias is not None and head.kind != ops.MatrixMultiply.KIND)
    return chain if worth else None


# ---- the fused layer ----------------------------------------------------------------------------------------
def _bias_tensor(network: Network, chain: _Chain) -> Tensor | None:
    if not chain.bias_terms:
        return chain.bias
    total = sum(chain.bias_terms)
    if chain.bias is not None:
        total = chain.bias.value.reshape(-1) + total
    return make_constant(network, np.asarray(total, dtype=chain.tensor.dtype.numpy), f"{chain.head.name}.bias")


def _fused_op(chain: _Chain) -> ops.OpAttrs:
    op, kind = chain.head.op, chain.head.kind
    if kind == ops.Convolution.KIND:
        return ops.FusedConvolution(op.stride, chain.pads or op.pads, op.dilation, op.groups, **chain.epilogue)
    if kind == ops.Deconvolution.KIND:
        return ops.FusedDeconvolution(op.stride, op.pads, op.dilation, op.output_padding, op.groups,
                                      **chain.epilogue)
    if kind == ops.MatrixMultiply.KIND:
        return ops.FusedMatMul(op.transpose_a, op.transpose_b, **chain.epilogue)
    return ops.FusedMatMul(False, True, **chain.epilogue)  # fully connected: x @ weights^T


def _matmul_operand(network: Network, chain: _Chain, base: str) -> tuple[Tensor, list[Layer]]:
    """A fully connected layer flattens its input from `axis` on: a reshape (an alias) makes that explicit."""
    x = chain.x
    if chain.head.kind != ops.FullyConnected.KIND:
        return x, []
    axis = chain.head.op.axis % max(len(x.shape), 1)
    flat = x.shape[:axis] + (int(np.prod(x.shape[axis:], dtype=np.int64)),)
    if flat == x.shape:
        return x, []
    reshape = make_layer(network, ops.Shuffle(reshape_dims=flat), [x], f"{base}.flatten")
    return reshape.outputs[0], [reshape]


@register_pass
class FuseVertical(Pass):
    name = "fuse_vertical"

    def run(self, network: Network) -> bool:
        changed = False
        uses = Uses(network)
        gone: set[int] = set()
        for head in list(network.layers):
            chain = None if id(head) in gone else _gather(head, uses)
            if chain is None:
                continue
            self._replace(network, chain)
            gone.update(id(layer) for layer in chain.layers)
            uses = Uses(network)
            changed = True
        return changed

    def _replace(self, network: Network, chain: _Chain) -> None:
        base = f"{_names(chain.head)[0]}.fused"
        x, helpers = _matmul_operand(network, chain, base)
        inputs = [x, chain.head.inputs[1], _bias_tensor(network, chain), chain.residual, chain.slope]
        fused = make_layer(network, _fused_op(chain), inputs, base, outputs=chain.layers[-1].outputs)
        fused.fused_from = tuple(dict.fromkeys(name for layer in chain.layers for name in _names(layer)))
        for helper in helpers:
            helper.fused_from = fused.fused_from
        splice(network, chain.layers, [*helpers, fused], before=chain.layers[-1])
        self.count(fused.kind)
        for part in chain.parts:
            self.count(part)
        self.log.append(" + ".join(fused.fused_from) + f" -> {fused.name}")
