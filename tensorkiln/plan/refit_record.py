"""What an engine records so that it can be refit (tools/refit.py): the model weights it was built from (name,
dtype, shape), which of them each engine weight derives from, and the build settings a refit must repeat.

A refit re-runs the importer and the passes on the new weights with the engine's tactics given as hints, so folded
and fused weights (BatchNorm folded into a convolution, scales, horizontal merges, INT8 weights) come out exactly as
a fresh build makes them. This record says what may change (floating model weights that reach an engine weight)
and lets the refitter check new weights for name, shape and dtype before it builds anything.

The derivation is per step: an engine weight read by a step derives from the model weights of the original layers
that step was fused from (and of the constant layers that computed them), the granularity at which fusion
provenance (`Step.fused_from`) is kept. In build_info under "refit"; the loader validates it field by field.
"""
from __future__ import annotations

from typing import Any, Iterable

from ..ir import ops
from ..ir.graph import Network, Tensor
from .plan import Plan, TensorSpec

RECORD_KEY = "refit"
_RECORD_KEYS = {"config", "model_weights", "derived", "int8_calibration", "int8_keep_float"}
_CONFIG_KEYS = {"passes", "layer_precisions"}
MAX_CALIBRATION_CHARS = 2**26  # a calibration cache: one short line per activation


def model_weight_sources(network: Network) -> tuple[dict[str, frozenset[str]], dict[str, Tensor]]:
    """Before the passes: ({layer name: the model weights its constant inputs come from}, {model weight name:
    tensor}). Model weights are the floating constants the model gives (no producer, or a Constant layer); a constant
    the importer computed from some (Network.weight_origins), or a constant layer computes (a transposed or
    dequantized weight), comes from those."""
    origins: dict[int, frozenset[str]] = {}
    leaves: dict[str, Tensor] = {}

    def origin(tensor: Tensor | None) -> frozenset[str]:
        if tensor is None or not tensor.is_constant:
            return frozenset()
        if id(tensor) not in origins:  # a leaf: no producer, or a layer folded before this walk saw it
            if tensor.dtype.is_floating and id(tensor) not in network.weight_origins:
                leaves[tensor.name] = tensor
            mine = frozenset({tensor.name}) if tensor.dtype.is_floating else frozenset()
            origins[id(tensor)] = network.weight_origins.get(id(tensor), mine)
        return origins[id(tensor)]

    sources: dict[str, frozenset[str]] = {}
    for layer in network.layers:
        if layer.kind == ops.Constant.KIND:
            for tensor in layer.outputs:
                origin(tensor)
            continue
        found = frozenset().union(*(origin(t) for t in layer.inputs))
        sources[layer.name] = found
        if layer.outputs and all(t.is_constant for t in layer.outputs):  # folded by fold_constants
            for tensor in layer.outputs:
                origins[id(tensor)] = found
    return sources, leaves


def make_record(plan: Plan, sources: dict[str, frozenset[str]], weights: dict[str, Tensor],
                config: dict[str, Any], int8_calibration: str | None, int8_keep_float: int) -> dict[str, Any]:
    """The refit record of a freshly lowered plan (see the module docstring)."""
    readers: dict[str, set[str]] = {}
    for step in plan.steps:
        for name in step.inputs:
            if name is not None:
                readers.setdefault(name, set()).update(step.fused_from or (step.name,))
    derived: dict[str, list[str]] = {}
    for spec in plan.weights:
        found = set().union(*(sources.get(layer, frozenset()) for layer in readers.get(spec.name, ())))
        if spec.name in weights:  # a model weight the engine holds as it is (a network output, an unfused input)
            found.add(spec.name)
        found &= weights.keys()  # (a name an importer gave as an origin is a model weight; a guard all the same)
        if found:
            derived[spec.name] = sorted(found)
    used = sorted({name for names in derived.values() for name in names})
    model_weights = [TensorSpec(name, weights[name].dtype, weights[name].shape).to_json() for name in used]
    return {"config": config, "model_weights": model_weights, "derived": derived,
            "int8_calibration": int8_calibration, "int8_keep_float": int8_keep_float}


def record_from_json(value: Any, check) -> dict[str, Any]:
    """The record read from an engine file, each field checked (`check`: schema.py's helpers, passed in to keep
    this module free of the schema's imports); raises PlanProblem naming the field."""
    where = f"build_info {RECORD_KEY!r}"
    check.expect(value, dict, where)
    check.check_keys(value, _RECORD_KEYS, set(), where)
    config = check.expect(value["config"], dict, f"{where} config")
    check.check_keys(config, _CONFIG_KEYS, set(), f"{where} config")
    for index, name in enumerate(check.expect(config["passes"], list, f"{where} config passes")):
        check.check_name(name, f"{where} config passes[{index}]")
    for index, pair in enumerate(check.expect(config["layer_precisions"], list, f"{where} config layer_precisions")):
        at = f"{where} config layer_precisions[{index}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise check.PlanProblem(f"{at} must be a [layer name, precision] pair")
        check.check_name(pair[0], f"{at} layer name")
        if pair[1] not in check.PRECISIONS:
            raise check.PlanProblem(f"{at} precision {check.describe(pair[1])} is not one of "
                                    f"{', '.join(check.PRECISIONS)}")
    specs = check.expect(value["model_weights"], list, f"{where} model_weights")
    names = {check.spec_from_json(spec, f"{where} model_weights[{index}]", False).name
             for index, spec in enumerate(specs)}
    for weight, sources in check.expect(value["derived"], dict, f"{where} derived").items():
        check.check_name(weight, f"{where} derived key")
        for index, source in enumerate(check.expect(sources, list, f"{where} derived {weight!r}")):
            check.check_name(source, f"{where} derived {weight!r}[{index}]")
            if source not in names:
                raise check.PlanProblem(f"{where} derived {weight!r}[{index}] {check.describe(source)} is not one of "
                                        "its model_weights")
    calibration = check.expect(value["int8_calibration"], (str, type(None)), f"{where} int8_calibration")
    if calibration is not None and len(calibration) > MAX_CALIBRATION_CHARS:
        raise check.PlanProblem(f"{where} int8_calibration is longer than {MAX_CALIBRATION_CHARS} characters")
    keep = check.expect(value["int8_keep_float"], int, f"{where} int8_keep_float")
    if keep < 0:
        raise check.PlanProblem(f"{where} int8_keep_float must not be negative")
    return value


def engine_weights_of(record: dict[str, Any], model_weights: Iterable[str]) -> list[str]:
    """The engine weights that derive from any of `model_weights`."""
    wanted = set(model_weights)
    return sorted(weight for weight, sources in record["derived"].items() if wanted.intersection(sources))
