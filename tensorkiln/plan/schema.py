"""The plan's JSON, read field by field against its schema (the first half of plan validation; validate.py does the
rest). An engine file is hostile input: anyone can edit its plan and re-seal it (the checksum is a plain SHA-256), so
every key is checked for its type and range before a Plan is made of it. A problem raises PlanProblem, whose message
names the field; the reader turns it into one EngineFormatError line.
"""
from __future__ import annotations

import math
import re
import sys
from typing import Any

from ..ir.dtypes import DataType
from ..ir.serialize import op_from_json
from .memory import MemoryPlan
from .plan import STEP_PRECISIONS, Plan, Step, TensorSpec
from .refit_record import RECORD_KEY, record_from_json

TARGETS = ("cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")  # quant.precision.Precision's values
DYNAMIC = -1  # a dimension known only at run time (ir/infer.py), allowed in the shapes of produced tensors
MAX_RANK = 32
MAX_DIM = 2**40
MAX_TENSOR_BYTES = 2**40  # no tensor of an engine, and no buffer a kernel makes for one step, may be larger
MAX_NAME_LENGTH = 4096
MAX_JSON_DEPTH = 16  # of build_info's values and of plugin parameters
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # control characters (a name holding one could forge a line of output)
_CAPABILITY = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}", re.ASCII)
_PLAN_KEYS = {"network_name", "target", "precision", "device_name", "compute_capability", "inputs", "outputs",
              "tensors", "weights", "steps", "build_info", "memory"}
_OPTIONAL_PLAN_KEYS = {"build_info", "memory"}
_SPEC_KEYS = {"name", "dtype", "shape", "dim_names"}
_STEP_KEYS = {"name", "op", "inputs", "outputs", "tactic", "fused_from", "precision"}
_OPTIONAL_STEP_KEYS = {"fused_from", "precision"}


class PlanProblem(Exception):
    """One field of a plan read from an engine file is wrong; the message names it and says what is wrong."""


def describe(value: Any) -> str:
    """A short description of a JSON value for messages (never the whole value: it may be huge)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """`value`, which must be of `kind` (ints never match a bool, nor bools an int)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    matches = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not matches:
        names = " or ".join({"str": "a string", "int": "an integer", "list": "a list", "dict": "an object",
                             "bool": "true or false", "NoneType": "null", "float": "a number"}[k.__name__]
                            for k in kinds)
        raise PlanProblem(f"{where} must be {names}, not {describe(value)}")
    return value


def check_keys(data: dict, required: set[str], optional: set[str], where: str) -> None:
    unknown = sorted(set(data) - required - optional)
    missing = sorted(required - set(data))
    if unknown or missing:
        raise PlanProblem(f"{where} has the unknown keys {unknown} and lacks {missing}")


def check_name(value: Any, where: str) -> str:
    """A name: a non-empty string without control characters (names end up in one-line messages and tables)."""
    expect(value, str, where)
    if not value or len(value) > MAX_NAME_LENGTH or _CONTROL.search(value):
        raise PlanProblem(f"{where} {describe(value)} must be a non-empty string of at most {MAX_NAME_LENGTH} "
                          "characters without control characters")
    return value


def check_text(value: Any, where: str, allow_empty: bool = True) -> str:
    if allow_empty and value == "":
        return value
    return check_name(value, where)


def json_depth_ok(value: Any, depth: int = 0) -> bool:
    """Whether a JSON value nests at most MAX_JSON_DEPTH levels and holds only plain JSON values."""
    if depth > MAX_JSON_DEPTH:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_depth_ok(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(json_depth_ok(v, depth + 1) for v in value)
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float))


# ---- tensor specs ---------------------------------------------------------------------------------------------
def spec_from_json(data: Any, where: str, allow_dynamic: bool) -> TensorSpec:
    expect(data, dict, where)
    check_keys(data, _SPEC_KEYS, set(), where)
    name = check_name(data["name"], f"{where} name")
    where = f"tensor {name!r}"
    dtype = data["dtype"]
    if not isinstance(dtype, str) or dtype not in {d.value for d in DataType}:
        raise PlanProblem(f"{where}: dtype {describe(dtype)} is not one of {', '.join(d.value for d in DataType)}")
    shape = check_shape(data["shape"], f"{where}: shape", allow_dynamic)
    dim_names = expect(data["dim_names"], list, f"{where}: dim_names")
    if dim_names and len(dim_names) != len(shape):
        raise PlanProblem(f"{where}: dim_names has {len(dim_names)} entries for a shape of rank {len(shape)}")
    for index, dim_name in enumerate(dim_names):
        if dim_name is not None:
            check_name(dim_name, f"{where}: dim_names[{index}]")
    spec = TensorSpec(name, DataType(dtype), shape, tuple(dim_names))
    if spec.nbytes > MAX_TENSOR_BYTES:
        raise PlanProblem(f"{where} of shape {list(shape)} would take {spec.nbytes} bytes, more than the "
                          f"{MAX_TENSOR_BYTES} an engine tensor may")
    return spec


def check_shape(value: Any, where: str, allow_dynamic: bool) -> tuple[int, ...]:
    expect(value, list, where)
    if len(value) > MAX_RANK:
        raise PlanProblem(f"{where} has rank {len(value)}, more than {MAX_RANK}")
    lowest = DYNAMIC if allow_dynamic else 0
    for d in value:
        if not is_int(d) or not lowest <= d <= MAX_DIM:
            allowed = f"sizes from 0 to {MAX_DIM}" + (" (or -1 where only the run knows)" if allow_dynamic else "")
            raise PlanProblem(f"{where} {describe(value)} must hold {allowed}")
    return tuple(value)


def _specs(data: dict, key: str, allow_dynamic: bool) -> tuple[TensorSpec, ...]:
    entries = expect(data[key], list, f"plan {key!r}")
    return tuple(spec_from_json(entry, f"plan {key!r}[{index}]", allow_dynamic) for index, entry in enumerate(entries))


# ---- steps ----------------------------------------------------------------------------------------------------
def step_from_json(data: Any, index: int) -> Step:
    where = f"step {index}"
    expect(data, dict, where)
    check_keys(data, _STEP_KEYS - _OPTIONAL_STEP_KEYS, _OPTIONAL_STEP_KEYS, where)
    name = check_name(data["name"], f"{where} name")
    where = f"step {name!r}"
    try:
        op = op_from_json(data["op"])
    except ValueError as error:  # AttributeFormatError: names the attribute
        raise PlanProblem(f"{where}: {error}") from None
    where = f"step {name!r} ({op.KIND})"
    inputs = expect(data["inputs"], list, f"{where}: inputs")
    for position, tensor in enumerate(inputs):
        if tensor is not None:
            check_name(tensor, f"{where}: inputs[{position}]")
    outputs = expect(data["outputs"], list, f"{where}: outputs")
    if not outputs:
        raise PlanProblem(f"{where}: outputs is empty; every step writes at least one tensor")
    for position, tensor in enumerate(outputs):
        check_name(tensor, f"{where}: outputs[{position}]")
    if len(set(outputs)) != len(outputs):
        raise PlanProblem(f"{where}: outputs {describe(outputs)} names a tensor twice")
    tactic = expect(data["tactic"], str, f"{where}: tactic")
    fused_from = expect(data.get("fused_from", []), list, f"{where}: fused_from")
    for position, original in enumerate(fused_from):
        check_name(original, f"{where}: fused_from[{position}]")
    precision = data.get("precision", "")
    if not isinstance(precision, str) or precision not in STEP_PRECISIONS:
        raise PlanProblem(f"{where}: precision {describe(precision)} is not one of {list(STEP_PRECISIONS)}")
    return Step(name, op, tuple(inputs), tuple(outputs), tactic, tuple(fused_from), precision)


# ---- build info and the memory plan ---------------------------------------------------------------------------
# the build_info keys tensorkiln writes and reads, with their value types; others may hold any plain JSON value
_BUILD_INFO_TYPES: dict[str, tuple[type, ...]] = {
    "channels_last": (bool,), "layers_before": (int,), "build_seconds": (int, float), "pass_counts": (dict,),
    "passes": (list,),
}


def build_info_from_json(value: Any) -> dict[str, Any]:
    info = expect(value, dict, "plan 'build_info'")
    if not json_depth_ok(info):
        raise PlanProblem(f"plan 'build_info' must hold plain JSON values nested at most {MAX_JSON_DEPTH} deep")
    for key, kinds in _BUILD_INFO_TYPES.items():
        if key in info:
            expect(info[key], kinds, f"build_info {key!r}")
    for key, count in info.get("pass_counts", {}).items():
        expect(count, int, f"build_info 'pass_counts' {key!r}")
    for index, record in enumerate(info.get("passes", [])):
        where = f"build_info 'passes'[{index}]"
        expect(record, dict, where)
        check_keys(record, {"name", "seconds", "counts"}, set(), where)
        check_name(record["name"], f"{where} name")
        seconds = expect(record["seconds"], (int, float), f"{where} seconds")
        if not math.isfinite(seconds):
            raise PlanProblem(f"{where} seconds must be a finite number")
        for key, count in expect(record["counts"], dict, f"{where} counts").items():
            expect(count, int, f"{where} counts {key!r}")
    if "build_seconds" in info and not math.isfinite(info["build_seconds"]):
        raise PlanProblem("build_info 'build_seconds' must be a finite number")
    if RECORD_KEY in info:  # what a refit needs (refit_record.py); engines built before it lack it
        record_from_json(info[RECORD_KEY], sys.modules[__name__])
    return info


def memory_from_json(value: Any) -> MemoryPlan | None:
    if value is None:
        return None
    expect(value, dict, "plan 'memory'")
    check_keys(value, {"offsets", "arena_bytes", "activation_bytes"}, set(), "plan 'memory'")
    offsets = expect(value["offsets"], dict, "memory 'offsets'")
    for name, offset in offsets.items():
        if not is_int(offset) or not 0 <= offset <= MAX_TENSOR_BYTES:
            raise PlanProblem(f"memory offset of {name!r} must be an integer from 0 to {MAX_TENSOR_BYTES}")
    for key in ("arena_bytes", "activation_bytes"):
        if not is_int(value[key]) or not 0 <= value[key] <= MAX_TENSOR_BYTES:
            raise PlanProblem(f"memory {key!r} must be an integer from 0 to {MAX_TENSOR_BYTES}")
    return MemoryPlan(dict(offsets), value["arena_bytes"], value["activation_bytes"])


# ---- the plan -------------------------------------------------------------------------------------------------
def plan_from_json(data: Any) -> Plan:
    """A Plan of the parsed JSON of an engine's plan, each field checked for type and range (PlanProblem if not)."""
    expect(data, dict, "the plan")
    check_keys(data, _PLAN_KEYS - _OPTIONAL_PLAN_KEYS, _OPTIONAL_PLAN_KEYS, "the plan")
    target, precision = data["target"], data["precision"]
    if not isinstance(target, str) or target not in TARGETS:
        raise PlanProblem(f"plan target {describe(target)} is not one of {', '.join(TARGETS)}")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise PlanProblem(f"plan precision {describe(precision)} is not one of {', '.join(PRECISIONS)}")
    capability = expect(data["compute_capability"], str, "plan 'compute_capability'")
    if capability and not _CAPABILITY.fullmatch(capability):
        raise PlanProblem(f"plan compute_capability {describe(capability)} is not of the form MAJOR.MINOR")
    steps = expect(data["steps"], list, "plan 'steps'")
    plan = Plan(check_text(data["network_name"], "plan 'network_name'"), target, _specs(data, "inputs", False),
                _specs(data, "outputs", True), _specs(data, "tensors", True),
                tuple(step_from_json(step, index) for index, step in enumerate(steps)), _specs(data, "weights", False),
                precision, check_text(data["device_name"], "plan 'device_name'"), capability,
                build_info_from_json(data.get("build_info", {})), memory_from_json(data.get("memory")))
    return plan
