"""Precision assignment: which layers of a reduced-precision engine compute in FP16/BF16, and which stay FP32.

A layer stays in FP32 when the user says so, or when a probe run of the network in FP32 on random inputs
shows that its inputs or outputs would overflow FP16 (|x| beyond half of FP16's largest value, leaving headroom for
inputs larger than the probe's).
"""
from __future__ import annotations

import enum
from typing import Iterable

import numpy as np
import torch

from ..ir.graph import Network
from ..kernels.registry import get_kernel

FP16_SAFE_MAX = 65504.0 / 2

# Inputs whose size does not matter to a layer's precision: an additive attention mask is added in FP32 inside the
# attention kernel, and a mask value beyond FP16's range becomes -inf, which masks the position just the same.
_RANGE_EXEMPT_INPUTS = {"attention": {3}}


class Precision(enum.Enum):
    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"  # convolutions and GEMMs in (simulated) INT8 at calibrated scales; other layers in FP32

    @property
    def reduced(self) -> bool:
        return self in (Precision.FP16, Precision.BF16)


def probe_ranges(network: Network, device: torch.device, seed: int = 0) -> dict[str, float]:
    """Largest |value| of every floating input or output of each layer, on one FP32 run with random inputs."""
    rng = np.random.default_rng(seed)
    env: dict[int, torch.Tensor] = {}
    for tensor in network.inputs:
        if tensor.dtype.is_floating:
            value = rng.standard_normal(tensor.shape).astype(np.float32)
        else:
            value = rng.integers(0, 2, tensor.shape).astype(tensor.dtype.numpy)
        env[id(tensor)] = torch.from_numpy(value).to(device)
    ranges: dict[str, float] = {}
    with torch.inference_mode():
        for layer in network.layers:
            args = []
            for t in layer.inputs:
                if t is not None and id(t) not in env and t.is_constant:
                    env[id(t)] = torch.from_numpy(np.array(t.value)).to(device)
                args.append(None if t is None else env[id(t)])
            outputs = get_kernel(layer.kind)(layer.op, args)
            for tensor, value in zip(layer.outputs, outputs):
                env[id(tensor)] = value
            exempt = _RANGE_EXEMPT_INPUTS.get(layer.kind, set())
            checked = [a for index, a in enumerate(args) if index not in exempt]
            floating = [v for v in (*checked, *outputs) if v is not None and v.is_floating_point() and v.numel()]
            if floating:
                ranges[layer.name] = max(float(v.abs().max()) for v in floating)
    return ranges


def assign_precisions(network: Network, precision: Precision, overrides: Iterable[tuple[str, Precision]],
                      device: torch.device) -> tuple[dict[str, str], list[str]]:
    """Per-layer precision overrides ({layer name: "fp32"}) and the build-log lines that explain them."""
    result: dict[str, str] = {}
    log: list[str] = []
    for name, layer_precision in overrides:
        result[name] = layer_precision.value
        log.append(f"{name}: {layer_precision.value} (requested)")
    if precision is Precision.FP16:
        for name, largest in probe_ranges(network, device).items():
            if largest > FP16_SAFE_MAX and name not in result:
                result[name] = Precision.FP32.value
                log.append(f"{name}: kept in fp32: its values reach {largest:.3g}, beyond fp16's safe range")
    return result, log
