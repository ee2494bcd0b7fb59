"""The builder's INT8 step: calibrate the optimized network, pick the layers to keep in float, quantize the rest.

BuilderConfig(precision=Precision.INT8, int8=Int8Options(calibrator=...)) asks for it. The step runs after the
graph passes (BatchNorm folded, epilogues fused) and before lowering; it reports like a pass (quantize_int8).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Collection

import torch

from ..errors import BuildError
from ..ir import ops
from ..ir.graph import Network
from ..passes.fuse_pointwise import FusePointwise
from ..passes.manager import PassRecord
from ..passes.quantize_int8 import QuantizeInt8, weight_channel_axis
from .calibrate import calibrate
from .calibrator import Int8Calibrator
from .sensitivity import measure_sensitivity


_EXPLICIT_KINDS = (ops.QuantizeLinear.KIND, ops.DequantizeLinear.KIND, ops.QLinearConv.KIND, ops.QLinearMatMul.KIND)


@dataclasses.dataclass(frozen=True)
class Int8Options:
    calibrator: Int8Calibrator | None = None  # batches and/or a calibration cache
    keep_float: int = 0  # keep the K layers whose quantization costs the network's outputs most in float
    measure_sqnr: bool = False  # log each quantized layer's SQNR against FP32 on a calibration batch
    # GPU builds: a calibrated layer whose float kernel is faster than its integer ones computes unquantized in FP16
    # (TensorRT's mixed precision). strict keeps it quantized on the float kernel (simulated INT8: every layer's
    # numerics as the INT8 reference has them, as TensorRT's OBEY_PRECISION_CONSTRAINTS), at the quantize steps' cost
    strict: bool = False


def explicit_quantization_layers(network: Network) -> int:
    """How many quantize/dequantize/quantized-operator layers the network has (before the passes rewrite them)."""
    return sum(layer.kind in _EXPLICIT_KINDS for layer in network.layers)


def quantize_network(network: Network, options: Int8Options | None, say: Callable[[str], None],
                     device: torch.device | str = "cpu", explicit_layers: int = 0,
                     float_layers: Collection[str] = ()) -> PassRecord:
    """Calibrate (on `device`, the build's target), measure sensitivity where asked, and quantize.
    `explicit_layers`: explicit_quantization_layers of the network as imported; `float_layers`: names of layers
    not to quantize (BuilderConfig.layer_precisions)."""
    if explicit_layers:  # TensorRT's rule: a network with Q/DQ layers is explicitly quantized, the calibrator unused
        say(f"int8: the network is explicitly quantized ({explicit_layers} quantize/dequantize layers): its own "
            "scales are used, no calibration")
        return PassRecord(QuantizeInt8.name, 0.0, False, {"explicitly_quantized": 1}, (), len(network.layers))
    if options is None or options.calibrator is None:
        raise BuildError("an INT8 build needs a calibrator: BuilderConfig(int8=Int8Options(calibrator=...)), or "
                         "kiln build --int8 --calib DIR|FILE (or --calib-cache FILE of an earlier build)")
    start = time.perf_counter()
    calibration = calibrate(network, options.calibrator, say, device)
    candidates = [(layer, axis) for layer in network.layers if (axis := weight_channel_axis(layer)) is not None]
    keep: list[str] = []
    if options.keep_float or options.measure_sqnr:
        if not calibration.sample_batches:
            say("per-layer SQNR and --int8-keep-fp16 need a calibration batch; with the scales from the cache "
                "alone they are skipped (give --calib too)")
        else:
            sensitivities = measure_sensitivity(network, candidates, calibration.scales,
                                                calibration.sample_batches, device)
            ranked = sorted(sensitivities, key=lambda s: s.network_sqnr)
            keep = [s.layer for s in ranked[: options.keep_float]]
            for s in sensitivities:
                note = " (kept in float)" if s.layer in keep else ""
                say(f"int8 {s.layer}: SQNR {s.layer_sqnr:.1f} dB (layer), {s.network_sqnr:.1f} dB (network "
                    f"outputs, this layer alone quantized){note}")
    # the quantized layers also get the operands of the integer kernels (kernels/cuda/int8.py, kernels/cpu/int8_onednn.py)
    rewrite = QuantizeInt8(calibration.scales, [*keep, *float_layers], integer_weights=True)
    changed = rewrite.run(network)
    fusion = FusePointwise()  # each input's quantize/dequantize arithmetic becomes one step
    fusion.run(network)
    counts = {**rewrite.counts, **{f"{fusion.name}.{k}": n for k, n in fusion.counts.items()}}
    return PassRecord(rewrite.name, time.perf_counter() - start, changed, counts, tuple(rewrite.log),
                      len(network.layers))
