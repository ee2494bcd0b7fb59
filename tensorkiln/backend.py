"""An ONNX backend (onnx.backend.base.Backend) on tensorkiln, as the ONNX conformance suite expects."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from .builder import Builder
from .importers.onnx import parse_onnx
from .importers.onnx.context import BuildTimeValueRequired


class TensorkilnRep(BackendRep):
    """Builds on the first run, for the shapes of the inputs given then (engines have fixed shapes).

    Inputs whose values must be known at build time (axes, pads, sizes fed as graph inputs) are baked into
    the engine, as TensorRT does with shape tensors; a later run with other values for them rebuilds."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        initializers = {t.name for t in model.graph.initializer}
        self.input_names = [v.name for v in model.graph.input if v.name not in initializers]
        self.output_names = [v.name for v in model.graph.output]
        self._context = None
        self._baked: dict[str, np.ndarray] = {}

    def run(self, inputs: Any, **kwargs) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feed = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            values = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            feed = {k: np.asarray(v) for k, v in zip(self.input_names, values)}
        if self._context is None or not self._same_baked_values(feed):
            self._build(feed)
        outputs = self._context.execute({k: v for k, v in feed.items() if k not in self._baked})
        return tuple(outputs[name] for name in self.output_names)

    def _same_baked_values(self, feed: dict[str, np.ndarray]) -> bool:
        return all(np.array_equal(feed[name], value) for name, value in self._baked.items())

    def _build(self, feed: dict[str, np.ndarray]) -> None:
        baked: dict[str, np.ndarray] = {}
        while True:
            shapes = {k: v.shape for k, v in feed.items() if k not in baked}
            try:
                network = parse_onnx(self.model, input_shapes=shapes, input_values=baked)
                break
            except BuildTimeValueRequired as error:
                if error.tensor_name not in feed or error.tensor_name in baked:
                    raise
                baked[error.tensor_name] = feed[error.tensor_name]
        self._context = Builder().build(network).create_execution_context()
        self._baked = baked


class TensorkilnBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> TensorkilnRep:
        return TensorkilnRep(model)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs) -> Sequence[np.ndarray]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


prepare = TensorkilnBackend.prepare
run_model = TensorkilnBackend.run_model
supports_device = TensorkilnBackend.supports_device
