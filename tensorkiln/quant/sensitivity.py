"""Accuracy tools for INT8: how much each quantized layer costs, measured on a calibration batch.

- layer SQNR: the layer's output computed from FP32 inputs, once in float and once quantized (its input at the
  calibrated scale, its weights per channel), as signal-to-quantization-noise in dB.
Both are measured over the first few calibration batches (calibrate.SENSITIVITY_BATCHES).
- network SQNR (sensitivity): the network's outputs with only that layer quantized, against the FP32 outputs.
  `--int8-keep-fp16 K` keeps the K layers with the lowest network SQNR in float.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from ..ir.graph import Layer, Network
from ..kernels.registry import get_kernel
from .observe import NetworkRunner
from .weights import fake_quantize_weights

INT8_MIN, INT8_MAX = -128, 127


def sqnr_db(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    """10 log10(|ref|^2 / |ref - approx|^2); inf where they are equal."""
    reference, approximation = reference.double(), approximation.double()
    noise = float(((reference - approximation) ** 2).sum())
    signal = float((reference ** 2).sum())
    if noise == 0.0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def fake_quantize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """dequantize(quantize(x)) at a per-tensor scale, zero point 0, as QuantizeLinear/DequantizeLinear compute it."""
    return (torch.round(x.float() / scale).clamp(INT8_MIN, INT8_MAX) * scale).to(x.dtype)


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    layer_sqnr: float  # its own output, from FP32 inputs
    network_sqnr: float  # the network's outputs with this layer alone quantized (the lowest over the outputs)


def measure_sensitivity(network: Network, layers: Iterable[tuple[Layer, int]], scales: Mapping[str, float],
                        batches: Sequence[Mapping[str, np.ndarray]], device: torch.device | str = "cpu"
                        ) -> list[LayerSensitivity]:
    """For each (layer, weight channel axis) whose input has a scale: its layer and network SQNR over `batches`."""
    runner = NetworkRunner(network, device)
    references = [runner.run(batch) for batch in batches]
    outputs = [t.name for t in network.outputs if t.dtype.is_floating]
    results = []
    for layer, axis in layers:
        scale = scales.get(layer.inputs[0].name)
        if scale is None or not scale > 0:
            continue
        weights = torch.from_numpy(fake_quantize_weights(np.asarray(layer.inputs[1].value), axis)).to(runner.device)

        def quantized(target: Layer, args: list, layer=layer, scale=scale, weights=weights):
            if target is not layer:
                return None
            return get_kernel(target.kind)(target.op, [fake_quantize(args[0], scale), weights, *args[2:]])

        alone, exact, runs = [], [], []
        for batch, reference in zip(batches, references):
            layer_args = [None if t is None else reference[t.name] if t.name in reference else
                          torch.from_numpy(np.array(t.value)).to(runner.device) for t in layer.inputs]
            alone.append(quantized(layer, layer_args)[0].reshape(-1))
            exact.append(reference[layer.outputs[0].name].reshape(-1))
            runs.append(runner.run(batch, override=quantized, keep_all=False))  # the outputs are compared
        network_sqnr = min(sqnr_db(torch.cat([r[name].reshape(-1) for r in references]).float(),
                                   torch.cat([r[name].reshape(-1) for r in runs]).float()) for name in outputs)
        results.append(LayerSensitivity(layer.name, sqnr_db(torch.cat(exact), torch.cat(alone)), network_sqnr))
    return results
