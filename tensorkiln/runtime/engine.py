"""Engine: the immutable part of an executable network (plan, weights, chosen kernels)."""
from __future__ import annotations

import enum
from pathlib import Path

import torch

from ..ir.dtypes import DataType
from ..plan import Plan, TensorSpec
from ..plan.file_format import serialize


class TensorIOMode(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"


class Engine:
    def __init__(self, plan: Plan, weights: dict[str, torch.Tensor]):
        self.plan = plan
        self.weights = weights
        self._io = {t.name: t for t in (*plan.inputs, *plan.outputs)}

    # ---- I/O introspection ------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.plan.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.plan.outputs

    @property
    def num_io_tensors(self) -> int:
        return len(self.plan.inputs) + len(self.plan.outputs)

    def get_tensor_name(self, index: int) -> str:
        return (*self.plan.inputs, *self.plan.outputs)[index].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        self._spec(name)
        return TensorIOMode.INPUT if any(t.name == name for t in self.plan.inputs) else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._spec(name).shape

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._spec(name).dtype

    def _spec(self, name: str) -> TensorSpec:
        try:
            return self._io[name]
        except KeyError:
            raise KeyError(f"engine has no input or output named {name!r}; it has {sorted(self._io)}") from None

    # ---- sizes and layers ---------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.plan.steps)

    @property
    def weights_nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.weights.values())

    @property
    def activations_nbytes(self) -> int:
        """Sum of the sizes of all activations, as if each had its own buffer."""
        return sum(t.nbytes for t in self.plan.tensors)

    @property
    def arena_nbytes(self) -> int:
        """Bytes of the one activation arena of the memory plan (network outputs are held outside it)."""
        return self.plan.memory.arena_bytes if self.plan.memory else self.activations_nbytes

    # ---- serialization and contexts --------------------------------------------------------------
    def serialize(self) -> bytes:
        return serialize(self.plan, self.weights)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.serialize())

    def create_execution_context(self, use_arena: bool = False):
        from .context import ExecutionContext

        return ExecutionContext(self, use_arena=use_arena)
