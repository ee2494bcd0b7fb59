"""Engine: the immutable part of an executable network (plan, weights, chosen kernels)."""
from __future__ import annotations

import enum
from pathlib import Path

import torch

from ..ir.dtypes import DataType
from ..plan import Plan, TensorSpec
from ..errors import EngineFormatError
from ..plan.file_format import serialize


class TensorIOMode(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"


class Engine:
    """Plan + weights. Weights move to the target device once, on first use, and are shared by contexts."""

    def __init__(self, plan: Plan, weights: dict[str, torch.Tensor]):
        self.plan = plan
        self.weights = weights
        self._io = {t.name: t for t in (*plan.inputs, *plan.outputs)}
        self.device = torch.device(plan.target)
        check_device(plan)
        self._device_weights: dict[str, torch.Tensor] | None = None
        self._channels_last = bool(plan.build_info.get("channels_last"))
        # shared with the other engines of the same model (weight_sharing.py; set by runtime/profiles.py)
        self.weight_cache = None

    def device_weights(self) -> dict[str, torch.Tensor]:
        if self._device_weights is None:
            self._device_weights = {name: self._shared_to_device(w) for name, w in self.weights.items()}
        return self._device_weights

    def _shared_to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.weight_cache is None:
            return self._to_device(tensor)
        return self.weight_cache.device_weight(tensor, self.device, self.memory_format(tensor.dim()),
                                               lambda: self._to_device(tensor))

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format(tensor.dim()))

    def memory_format(self, rank: int) -> torch.memory_format:
        """The layout the engine's kernels want for tensors of `rank` dims (NHWC engines: channels_last 4-D)."""
        return torch.channels_last if self._channels_last and rank == 4 else torch.contiguous_format

    def prepare_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """An input on the engine's device, in the memory format its kernels prefer."""
        return self._to_device(tensor) if tensor.device != self.device or self._channels_last else tensor

    def compute_dtype(self, step) -> torch.dtype | None:
        """The floating dtype a step computes in (None: as its inputs come)."""
        dtype = step.compute_dtype(self.plan.precision)
        return None if dtype is None else dtype.torch

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

    def create_execution_context(self, use_arena: bool = False, cuda_graph: bool | None = None, limits=None):
        """A context (see ExecutionContext); `limits` (tensorkiln.limits.ResourceLimits) bounds the memory its
        inputs and activations may need (default: half the machine's memory, at most 32 GiB)."""
        from .context import ExecutionContext

        return ExecutionContext(self, use_arena=use_arena, cuda_graph=cuda_graph, limits=limits)


def check_device(plan: Plan) -> None:
    """An engine runs only on the kind of device it was built and tuned for."""
    if plan.target != "cuda":
        return
    if not torch.cuda.is_available():
        raise EngineFormatError(f"this engine was built for CUDA ({plan.device_name or 'a GPU'}, compute capability "
                                f"{plan.compute_capability}), but this machine has no CUDA device; rebuild it for "
                                "the CPU with `kiln build` (the default target)")
    capability = "%d.%d" % torch.cuda.get_device_capability()
    if plan.compute_capability and capability != plan.compute_capability:
        raise EngineFormatError(f"this engine was built for compute capability {plan.compute_capability} "
                                f"({plan.device_name}); this GPU ({torch.cuda.get_device_name()}) is {capability}; "
                                "rebuild the engine on this GPU with `kiln build --device cuda`")
