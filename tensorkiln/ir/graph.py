"""The graph: tensors, layers and the network that holds them."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator

import numpy as np

from .dtypes import DataType
from .ops import OpAttrs


@dataclasses.dataclass(eq=False)
class Tensor:
    """A value flowing between layers.

    `shape` is always concrete (engines are built for fixed shapes); `dim_names` keeps the symbolic
    names the model gave its dynamic dimensions (None where a dim is static), for introspection.
    `value` is set for weights and for any tensor whose value is known at build time.
    """
    name: str
    dtype: DataType
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...] = ()
    value: np.ndarray | None = dataclasses.field(default=None, repr=False)
    producer: "Layer | None" = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if not self.dim_names:
            self.dim_names = (None,) * len(self.shape)

    @property
    def is_constant(self) -> bool:
        return self.value is not None

    @property
    def is_dynamic(self) -> bool:
        """Some dimension is known only at run time (-1)."""
        return any(d < 0 for d in self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def describe(self) -> str:
        dims = [("?" if d < 0 else str(d)) if name is None else f"{name}={d}" for d, name in zip(self.shape, self.dim_names)]
        return f"{self.name}: {self.dtype.value}[{', '.join(dims)}]"


@dataclasses.dataclass(eq=False)
class Layer:
    """One operation: a kind (given by the type of `op`), typed attributes, inputs and outputs.

    An optional input is None (for example a convolution without bias).
    """
    name: str
    op: OpAttrs
    inputs: list[Tensor | None]
    outputs: list[Tensor]

    @property
    def kind(self) -> str:
        return self.op.KIND

    def get_output(self, index: int = 0) -> Tensor:
        return self.outputs[index]

    def get_input(self, index: int) -> Tensor | None:
        return self.inputs[index]

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)


class Network:
    """Layers in topological order, the tensors between them, and the marked inputs and outputs."""

    def __init__(self, name: str = "network"):
        self.name = name
        self.layers: list[Layer] = []
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self._names: set[str] = set()
        self._counter = itertools.count()

    def unique_name(self, base: str) -> str:
        name = base
        while name in self._names:
            name = f"{base}_{next(self._counter)}"
        self._names.add(name)
        return name

    def claim_name(self, name: str) -> None:
        self._names.add(name)

    def tensors(self) -> Iterator[Tensor]:
        """Every distinct tensor: graph inputs, then layer inputs and outputs in order."""
        seen: set[int] = set()
        for tensor in itertools.chain(self.inputs, *((*l.inputs, *l.outputs) for l in self.layers)):
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                yield tensor

    def consumers(self) -> dict[int, list[Layer]]:
        """id(tensor) -> the layers that read it."""
        result: dict[int, list[Layer]] = {}
        for layer in self.layers:
            for tensor in layer.inputs:
                if tensor is not None:
                    result.setdefault(id(tensor), []).append(layer)
        return result

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in network {self.name!r}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)
