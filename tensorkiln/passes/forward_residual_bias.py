"""Residual bias forwarding: along a residual stream of linear blocks (MobileNetV2's and MobileNetV3's projections:
convolution + bias + residual add, no activation), each block's bias is carried forward in the stream instead of
being added by the block, and the layers that read the stream through their weights take it into their own bias.

    s0 = conv(x0, W0) + b0        =>  s0' = conv(x0, W0)            s0 = s0' + c0,  c0 = b0
    s1 = conv(x1, W1) + b1 + s0   =>  s1' = conv(x1, W1) + s0'      s1 = s1' + c1,  c1 = b1 + c0
    e = act(conv(s1, We) + be)    =>  e = act(conv(s1', We) + be + sum(We) c1)

This is exact in real arithmetic. It buys a residual block with no bias, which cuBLAS computes as one GEMM
accumulating into its residual (beta = 1; kernels/cuda/cublas.py). With a bias it takes a second kernel: cuBLASLt's
bias epilogue cannot be combined with accumulation through PyTorch. On MobileNetV2 at batch 1 that kernel is about
2 us of each projection's 6.5 us on an H200.

A stream tensor may only be read where the constant can go:
  - as the residual of another such block;
  - as the residual of a fused convolution with nothing nonlinear between its bias and the residual add (ResNet's
    last convolution of a block, whose ReLU follows the add): its bias takes the constant in, and the stream ends;
  - as the input of a convolution with constant weights, one group and no padding. Padding would read zeros where
    the shifted stream needs -c.
A stream tensor that is a network output, or that any other layer reads, keeps its bias. So does a block whose
chain holds no residual add: it would only move the bias. ResNet's downsample convolutions lose theirs to the
block's last convolution: a strided 1x1 convolution with no bias is one batched GEMM (kernels/cuda/cublas.py).

It runs by default. On an H200 (2026-11-30, `python bench/ab.py --workload mobilenet_v2:1 --variant default=
--variant forward=+forward_residual_bias`, then opt-in) MobileNetV2 b1 ran 0.254 ms with it against 0.282 ms
without, in each of 7 alternating rounds, with an FP16 error of 7.0e-4 against 6.8e-4. With the ResNet downsamples
(`--variant noforward=-forward_residual_bias`) ResNet-50 b1 ran 0.348 against 0.359 ms, b256 6.73 against 7.10 ms.
The stored stream values are the true ones minus c: on CenterFace up to 1.9x larger in magnitude, so FP16 rounds
them more coarsely; its FP16 outputs stay within the tolerance of the other real models (tests/gpu/
test_cuda_target.py). `kiln build --passes=-forward_residual_bias` leaves it out.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from .manager import Pass, register_pass
from .pattern import Uses, bias_values, replace_bias

_CONVOLUTIONS = (ops.Convolution.KIND, ops.FusedConvolution.KIND)


def _linear_block(layer: Layer) -> bool:
    """A fused convolution whose output is conv + bias (+ residual): nothing nonlinear after the bias."""
    if layer.kind != ops.FusedConvolution.KIND or not layer.outputs[0].dtype.is_floating:
        return False
    op, bias = layer.op, layer.inputs[2]
    return (op.activation is None and not op.prelu and op.post_activation is None and layer.inputs[1].is_constant
            and (bias is None or bias.is_constant))


def _residual(layer: Layer) -> Tensor | None:
    return layer.inputs[3] if layer.kind == ops.FusedConvolution.KIND and layer.op.residual else None


def _absorbs(layer: Layer, tensor: Tensor) -> bool:
    """Whether `layer` reads `tensor` only as its input image, through constant weights, with no padding."""
    return (layer.kind in _CONVOLUTIONS and layer.inputs[0] is tensor
            and not any(t is tensor for t in layer.inputs[1:]) and layer.inputs[1].is_constant
            and layer.op.groups == 1 and not any(layer.op.pads)
            and (_bias(layer) is None or _bias(layer).is_constant))


def _ends_stream(layer: Layer, tensor: Tensor) -> bool:
    """Whether `layer` reads `tensor` only as its residual, added right after its bias (no activation between)."""
    return (_residual(layer) is tensor and not any(t is tensor for t in layer.inputs[:3])
            and layer.op.activation is None and not layer.op.prelu
            and (_bias(layer) is None or _bias(layer).is_constant))


def _bias(layer: Layer) -> Tensor | None:
    return layer.inputs[2] if len(layer.inputs) > 2 else None


@register_pass
class ForwardResidualBias(Pass):
    name = "forward_residual_bias"

    def run(self, network: Network) -> bool:
        uses = Uses(network)
        chosen = self._blocks(network, uses)
        if not chosen:
            return False
        carried: dict[int, np.ndarray] = {}  # id(stream tensor) -> the constant c its stored values lack
        for layer in network.layers:  # in order: a layer's input constants are known before it is reached
            shift = carried.get(id(layer.inputs[0])) if layer.kind in _CONVOLUTIONS else None
            if shift is not None:  # absorbs: bias + sum over the kernel window of W . c
                weight = layer.inputs[1].value.astype(np.float64)
                bias = bias_values(layer, weight.shape[0]) + weight.sum(axis=tuple(range(2, weight.ndim))) @ shift
                replace_bias(network, layer, bias)
                self.count("absorbed")
            residual = _residual(layer)
            if id(layer) in chosen:
                shift = bias_values(layer, layer.outputs[0].shape[1])
                carried[id(layer.outputs[0])] = shift + carried.get(id(residual), 0.0)
                layer.inputs[2] = None
                self.count("forwarded")
                self.log.append(f"{layer.name}: bias carried forward in {layer.outputs[0].name}")
            elif id(residual) in carried:  # the stream ends here: the bias before the residual add takes c in
                replace_bias(network, layer, bias_values(layer, layer.outputs[0].shape[1]) + carried[id(residual)])
                self.count("absorbed")
        return True

    @staticmethod
    def _blocks(network: Network, uses: Uses) -> set[int]:
        """The linear blocks whose output stream only residual blocks, stream ends and absorbing convolutions read."""
        chosen = {id(layer): layer for layer in network.layers if _linear_block(layer)}
        changed = True
        while changed:  # drop blocks with a reader that cannot take the constant, until none is left
            changed = False
            for key, layer in list(chosen.items()):
                out = layer.outputs[0]
                if uses.is_output(out) or not all(
                        (id(reader) in chosen and _residual(reader) is out
                         and not any(t is out for t in reader.inputs[:3]))
                        or _ends_stream(reader, out) or _absorbs(reader, out)
                        for reader in uses.consumers(out)):
                    del chosen[key]
                    changed = True
        # a block helps only where its stream meets a residual add: its own, or a reader's
        return {key for key, layer in chosen.items()
                if _residual(layer) is not None
                or any(_residual(reader) is layer.outputs[0] for reader in uses.consumers(layer.outputs[0]))}
