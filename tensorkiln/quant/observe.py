"""Running a network's layers one by one with the portable (torch) kernels, seeing every intermediate tensor.

Calibration (calibrate.py) histograms every activation this way, and the accuracy tools (sensitivity.py) compare
layers run in FP32 with the same layers run quantized. The optimized network is run: its tensors are those the
engine will hold, so every scale the quantization pass looks up has been measured.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from ..errors import BuildError
from ..ir.graph import Layer, Network, Tensor
from ..kernels.registry import get_kernel

Visit = Callable[[Tensor, torch.Tensor], None]
LayerOverride = Callable[[Layer, list], list | None]  # (layer, its input values) -> outputs, or None: run as built


class NetworkRunner:
    """Runs `network` on a feed on `device` (the build's target: calibrating a CUDA engine runs on the GPU);
    constants are converted to torch once."""

    def __init__(self, network: Network, device: torch.device | str = "cpu"):
        self.network = network
        self.device = torch.device(device)
        self._constants: dict[int, torch.Tensor] = {}

    def run(self, feed: Mapping[str, np.ndarray | torch.Tensor], visit: Visit | None = None,
            override: LayerOverride | None = None, keep_all: bool = True) -> dict[str, torch.Tensor]:
        """{tensor name: value} of every tensor the run computed (the inputs too); with `keep_all` False, of the
        network's outputs only, each other tensor freed after its last reader (calibrating a large batch then
        holds what an engine's arena would, not every activation at once)."""
        values: dict[int, torch.Tensor] = {}
        named: dict[str, torch.Tensor] = {}
        last_reader = {} if keep_all else self._last_readers()
        for tensor in self.network.inputs:
            if tensor.name not in feed:
                raise BuildError(f"no value for network input {tensor.name!r} in the calibration batch")
            value = torch.as_tensor(np.asarray(feed[tensor.name], dtype=tensor.dtype.numpy)).to(self.device)
            values[id(tensor)] = named[tensor.name] = value
            if visit is not None:
                visit(tensor, value)
        with torch.inference_mode():
            for layer in self.network.layers:
                if layer.outputs and all(t.is_constant for t in layer.outputs):
                    continue  # a constant layer (a network not yet through fold_constants): its values are known
                args = [None if t is None else self._value(t, values) for t in layer.inputs]
                outputs = override(layer, args) if override is not None else None
                if outputs is None:
                    outputs = get_kernel(layer.kind)(layer.op, args)
                for tensor, value in zip(layer.outputs, outputs):
                    values[id(tensor)] = value
                    if keep_all:
                        named[tensor.name] = value
                    if visit is not None:
                        visit(tensor, value)
                for tensor in last_reader.get(id(layer), ()):
                    values.pop(id(tensor), None)
        if not keep_all:
            named = {t.name: values[id(t)] for t in self.network.outputs if id(t) in values}
        return named

    def _last_readers(self) -> dict[int, list[Tensor]]:
        """id(layer) -> the computed tensors whose last reader it is (network outputs are never freed)."""
        outputs = {id(t) for t in self.network.outputs}
        last: dict[int, tuple[Layer, Tensor]] = {}
        for layer in self.network.layers:
            for tensor in layer.inputs:
                if tensor is not None and not tensor.is_constant and id(tensor) not in outputs:
                    last[id(tensor)] = (layer, tensor)
        result: dict[int, list[Tensor]] = {}
        for layer, tensor in last.values():
            result.setdefault(id(layer), []).append(tensor)
        return result

    def _value(self, tensor: Tensor, values: dict[int, torch.Tensor]) -> torch.Tensor:
        if id(tensor) in values:
            return values[id(tensor)]
        if tensor.is_constant:
            if id(tensor) not in self._constants:
                self._constants[id(tensor)] = torch.from_numpy(np.array(tensor.value)).to(self.device)
            return self._constants[id(tensor)]
        raise BuildError(f"tensor {tensor.name!r} is read before any layer writes it")
