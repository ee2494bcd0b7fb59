"""The graph: tensors, layers and the network that holds them."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Iterator

import numpy as np

from ..errors import ModelFormatError
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


class NameTakenError(ModelFormatError):
    """A name was given to two tensors (or two layers) of one network: a model that names two values alike."""


class Network:
    """Layers in topological order, the tensors between them, and the marked inputs and outputs.

    Names are kept by construction: `reserve_names` sets aside the names a model gives its values before
    anything is converted, `unique_name` makes names that never take a reserved or used one, and only a value's
    owner takes its name, with `claim_name` (or `rename`), which refuses a name another tensor already holds.
    Layers and tensors have namespaces of their own (a Caffe layer and its top blob are often both "conv1").
    """

    def __init__(self, name: str = "network"):
        self.name = name
        self.layers: list[Layer] = []
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self._tensor_names: set[str] = set()  # held by a tensor (or made by unique_name)
        self._layer_names: set[str] = set()  # held by a layer (or made by unique_name)
        self._reserved: set[str] = set()  # the model's value names: only their owners take them
        self._counter = itertools.count()
        # constants an importer computed from model weights (a BatchNormalization's scale and shift): id(tensor) ->
        # the names of the weights they come from, so that an engine can say what a refit changes (plan/refit_record)
        self.weight_origins: dict[int, frozenset[str]] = {}

    def note_derived_constants(self, layers: Iterable["Layer"], sources: Iterable[Tensor]) -> None:
        """The constant layers among `layers` (made while converting one model node) come from the floating
        constants of `sources` (that node's inputs)."""
        origins = frozenset().union(*(self.weight_origins.get(id(t), frozenset({t.name})) for t in sources
                                      if isinstance(t, Tensor) and t.is_constant and t.dtype.is_floating))
        for layer in layers:
            if origins and layer.kind == "constant":
                self.weight_origins.update((id(t), origins) for t in layer.outputs)

    def reserve_names(self, names: Iterable[str]) -> None:
        """Keep `names` for the values that own them: no generated name will ever be one of them."""
        self._reserved.update(names)

    def unique_name(self, base: str) -> str:
        """A new name from `base`, free in both namespaces and not reserved (for a tensor or a layer)."""
        name = base
        while name in self._tensor_names or name in self._layer_names or name in self._reserved:
            name = f"{base}_{next(self._counter)}"
        self._tensor_names.add(name)
        self._layer_names.add(name)
        return name

    def unique_layer_name(self, base: str) -> str:
        """A new layer name from `base`: `base` itself unless another layer has it (tensors may share it)."""
        name = base
        while name in self._layer_names:
            name = f"{base}_{next(self._counter)}"
        self._layer_names.add(name)
        return name

    def claim_name(self, name: str) -> None:
        """A tensor takes `name` (its reserved name, or a new one); no two tensors may hold one name."""
        if name in self._tensor_names:
            raise NameTakenError(f"tensor name {name!r} is used twice in network {self.name!r}; give every "
                                 "tensor (input, output, weight) a name of its own")
        self._tensor_names.add(name)

    def tensor_name_taken(self, name: str) -> bool:
        return name in self._tensor_names

    def rename(self, tensor: Tensor, name: str) -> None:
        """Give `tensor` the name `name` (claimed as by claim_name); its old name is free again."""
        if tensor.name == name:
            return
        self.claim_name(name)
        self._tensor_names.discard(tensor.name)
        tensor.name = name

    def rename_unique(self, tensor: Tensor, base: str) -> str:
        """Give `tensor` a new name made from `base` (as unique_name); its old name is free again."""
        name = self.unique_name(base)
        self._tensor_names.discard(tensor.name)
        tensor.name = name
        return name

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
