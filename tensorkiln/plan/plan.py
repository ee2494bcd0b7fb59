"""The Plan: everything an engine executes, as plain data (JSON in the engine file)."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..ir.dtypes import DataType
from ..ir.ops import OpAttrs
from ..ir.serialize import op_from_json, op_to_json


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: DataType
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...] = ()

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor; 0 for a tensor whose size is known only at run time."""
        if self.is_dynamic:
            return 0
        count = 1
        for d in self.shape:
            count *= d
        return count * self.dtype.itemsize

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.value, "shape": list(self.shape),
                "dim_names": list(self.dim_names)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(data["name"], DataType(data["dtype"]), tuple(data["shape"]), tuple(data["dim_names"]))


STEP_PRECISIONS = ("", "fp32", "tf32", "fp16", "bf16")  # "": the engine's precision
_STEP_COMPUTE_DTYPES = {"fp32": DataType.FLOAT, "tf32": DataType.FLOAT, "fp16": DataType.HALF, "bf16": DataType.BF16}
_REDUCED_COMPUTE_DTYPES = {"fp16": DataType.HALF, "bf16": DataType.BF16}


@dataclasses.dataclass(frozen=True)
class Step:
    """One layer of the engine: its attributes, the tensors it reads and writes, and the chosen tactic."""
    name: str
    op: OpAttrs
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    tactic: str
    fused_from: tuple[str, ...] = ()  # names of the original layers this step implements
    precision: str = ""  # "" computes in the engine's precision; "fp32" for layers kept in full precision

    @property
    def kind(self) -> str:
        return self.op.KIND

    def compute_dtype(self, plan_precision: str) -> DataType | None:
        """The floating dtype this step computes in (its floating inputs are cast to it), in an engine of
        `plan_precision`; None: as its inputs come. TF32 layers compute in float32 (the math mode is the engine's)."""
        if self.precision:
            return _STEP_COMPUTE_DTYPES[self.precision]
        return _REDUCED_COMPUTE_DTYPES.get(plan_precision)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "op": op_to_json(self.op), "inputs": list(self.inputs),
                "outputs": list(self.outputs), "tactic": self.tactic, "fused_from": list(self.fused_from),
                "precision": self.precision}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Step":
        return cls(data["name"], op_from_json(data["op"]), tuple(data["inputs"]), tuple(data["outputs"]),
                   data["tactic"], tuple(data.get("fused_from", ())), data.get("precision", ""))


@dataclasses.dataclass(frozen=True)
class Plan:
    network_name: str
    target: str  # "cpu" or "cuda"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tensors: tuple[TensorSpec, ...]  # every activation the steps produce
    steps: tuple[Step, ...]
    weights: tuple[TensorSpec, ...]  # stored as tensors of the same name in the engine file
    precision: str = "fp32"
    device_name: str = ""
    compute_capability: str = ""
    build_info: dict[str, Any] = dataclasses.field(default_factory=dict)
    memory: "MemoryPlan | None" = None

    def to_json(self) -> dict[str, Any]:
        return {
            "network_name": self.network_name, "target": self.target, "precision": self.precision,
            "device_name": self.device_name, "compute_capability": self.compute_capability,
            "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
            "tensors": [t.to_json() for t in self.tensors], "weights": [t.to_json() for t in self.weights],
            "steps": [s.to_json() for s in self.steps], "build_info": self.build_info,
            "memory": None if self.memory is None else self.memory.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        specs = lambda key: tuple(TensorSpec.from_json(t) for t in data[key])  # noqa: E731
        return cls(data["network_name"], data["target"], specs("inputs"), specs("outputs"), specs("tensors"),
                   tuple(Step.from_json(s) for s in data["steps"]), specs("weights"), data["precision"],
                   data["device_name"], data["compute_capability"], data.get("build_info", {}),
                   None if data.get("memory") is None else MemoryPlan.from_json(data["memory"]))


from .memory import MemoryPlan  # noqa: E402  (memory.py imports Step and TensorSpec from this module)
