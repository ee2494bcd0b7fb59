"""Refit (TensorRT's Refitter): new weights into a built engine, without timing tactics again.

    refitter = Refitter(engine)                      # an engine built by this tensorkiln (it records what refit needs)
    refitter.refittable_weights()                    # {model weight name: TensorSpec}
    refitter.set_weights("conv1.weight", array)      # checked for name, shape and dtype at once
    new_engine = refitter.refit("model.onnx")        # the model the engine was built from (weights replaced)
    new_engine = refit_onnx(engine, "retrained.onnx")  # or a whole model with new weights

How: the model is imported again with the new weights and goes through the engine's recorded passes and settings,
with each step's tactic given as a hint (nothing is timed), so every folded or fused weight (BatchNorm folded into a
convolution, scales, horizontal merges, INT8 weights at the engine's recorded activation scales) is recomputed from
the new originals exactly as a fresh build computes it. The new plan must then be the old one in all but weight
values: the same steps, kinds, tensors, tactics and precisions, and attributes that differ only in floating values
(constants folded into an attribute). Anything else (new weights that change what the passes do, a layer an FP16
engine now keeps in FP32) is a RefitError naming the first difference: such weights need a rebuild.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import BuildError, RefitError
from ..plan import Plan, TensorSpec
from ..plan.refit_record import RECORD_KEY, engine_weights_of

_REBUILD = "rebuild the engine from the model with `kiln build`"


def refit_record(plan: Plan) -> dict[str, Any]:
    record = plan.build_info.get(RECORD_KEY)
    if record is None:
        raise RefitError(f"engine of {plan.network_name!r} records no refit information (it was built by a "
                         f"tensorkiln before refit existed); {_REBUILD} once to make it refittable")
    return record


class Refitter:
    """Collects new weights for `engine`, checks each against the engine's record, and builds the refit engine."""

    def __init__(self, engine):
        from ..runtime.engine import Engine

        if not isinstance(engine, Engine):  # an engine with optimization profiles holds a plan per shape
            raise RefitError(f"refit takes an engine of one shape, not a {type(engine).__name__}; an engine with "
                             "optimization profiles cannot be refit yet: rebuild it with `kiln build`")
        self.engine = engine
        self.record = refit_record(engine.plan)
        self._specs = {spec["name"]: TensorSpec.from_json(spec) for spec in self.record["model_weights"]}
        self.new_weights: dict[str, np.ndarray] = {}

    def refittable_weights(self) -> dict[str, TensorSpec]:
        """The model weights that may change: floating weights that reach an engine weight."""
        return dict(self._specs)

    def engine_weights_of(self, name: str) -> list[str]:
        """The engine weights that derive from model weight `name` (what a new value of it changes)."""
        self._spec(name)
        return engine_weights_of(self.record, [name])

    def set_weights(self, name: str, array) -> None:
        """A new value for model weight `name`: same shape and dtype as the engine was built with."""
        spec = self._spec(name)
        array = np.asarray(array)
        if array.shape != tuple(spec.shape) or array.dtype != spec.dtype.numpy:
            raise RefitError(f"new weights for {name!r} are {array.dtype} {list(array.shape)}, but the engine was "
                             f"built with {spec.dtype.numpy} {list(spec.shape)}; give an array of that shape and "
                             "dtype, or rebuild the engine for the new shape")
        self.new_weights[name] = array

    def set_named_weights(self, weights: Mapping[str, Any]) -> None:
        for name, array in weights.items():
            self.set_weights(name, array)

    def refit(self, model) -> Any:
        """The refit engine: `model` (the ONNX model the engine was built from: path, bytes or ModelProto) with the
        weights set here in place of its own."""
        return refit_onnx(self.engine, model, self.new_weights)

    def _spec(self, name: str) -> TensorSpec:
        if name not in self._specs:
            known = sorted(self._specs)
            listing = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
            raise RefitError(f"{name!r} is not a refittable weight of this engine; its refittable weights are "
                             f"{listing or 'none'} (Refitter.refittable_weights())")
        return self._specs[name]


def refit_onnx(engine, model, weights: Mapping[str, np.ndarray] | None = None):
    """`engine` refit with the weights of ONNX `model` (path, bytes or ModelProto), and `weights` in place of the
    model's initializers of those names. Every weight is checked against the engine's record first."""
    import onnx
    from onnx import numpy_helper

    from ..importers.onnx import parse_onnx
    from ..importers.onnx.parser import load_model

    refitter = Refitter(engine)
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(str(model) if isinstance(model, Path) else model))  # the caller's model stays as is
    initializers = _model_weights(proto.graph)
    for name, spec in refitter.refittable_weights().items():
        if name in initializers and name not in (weights or {}):
            refitter.set_weights(name, numpy_helper.to_array(initializers[name]))  # the model's own: checked too
    refitter.set_named_weights(weights or {})
    missing = sorted(set(refitter.refittable_weights()) - set(refitter.new_weights))
    if missing:
        raise RefitError(f"the model lacks the weights {missing[:8]} the engine was built with; give the model the "
                         "engine was built from (with new values), or rebuild the engine")
    for name, array in refitter.new_weights.items():
        initializers[name].CopyFrom(numpy_helper.from_array(array, name))
    plan = engine.plan
    fallback = any(step.kind == "onnx_fallback" for step in plan.steps)
    network = parse_onnx(proto, input_shapes={spec.name: spec.shape for spec in plan.inputs},
                         name=plan.network_name, allow_fallback=fallback)
    return refit_engine(engine, network)


def _model_weights(graph) -> dict[str, Any]:
    """The graph's weights by name, as TensorProtos to read and overwrite: its initializers and the values of its
    Constant nodes (some exporters store every weight as one)."""
    weights = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    weights.setdefault(node.output[0], attribute.t)
    return weights


def refit_engine(engine, network):
    """`engine` rebuilt from `network` (the engine's network with new weights, from any importer) with the engine's
    recorded settings and tactics; RefitError unless the result has the engine's structure."""
    from ..builder import Builder, BuilderConfig, Target
    from ..quant.int8 import Int8Options
    from ..quant.precision import Precision
    from ..quant.recorded import RecordedCacheCalibrator

    plan, record = engine.plan, refit_record(engine.plan)
    int8 = None
    if record["int8_calibration"] is not None:
        if record["int8_keep_float"]:
            raise RefitError("this INT8 engine keeps its most sensitive layers in float (--int8-keep-fp16), a choice "
                             f"measured on calibration data that new weights change; {_REBUILD}")
        int8 = Int8Options(calibrator=RecordedCacheCalibrator(record["int8_calibration"]))
    config = BuilderConfig(
        target=Target(plan.target), precision=Precision(plan.precision),
        layer_precisions=tuple((name, Precision(value)) for name, value in record["config"]["layer_precisions"]),
        passes=tuple(record["config"]["passes"]), int8=int8,
        tactic_hints=tuple((step.name, step.tactic) for step in plan.steps))  # one candidate each: nothing timed
    try:
        refit = Builder(config).build(network)
    except RefitError:
        raise
    except BuildError as error:
        raise RefitError(f"the new weights do not build into this engine: {error}") from None
    difference = first_difference(plan, refit.plan)
    if difference:
        raise RefitError(f"the new weights would make a different engine: {difference}; {_REBUILD} for them")
    return refit


# ---- structural comparison ---------------------------------------------------------------------------------------
def first_difference(old: Plan, new: Plan) -> str:
    """The first structural difference of two plans ("" where they differ only in weight values)."""
    for field in ("network_name", "target", "precision", "inputs", "outputs"):
        if getattr(old, field) != getattr(new, field):
            return f"its {field} change from {_brief(getattr(old, field))} to {_brief(getattr(new, field))}"
    if len(old.steps) != len(new.steps):
        return f"it has {len(new.steps)} steps instead of {len(old.steps)}"
    for index, (a, b) in enumerate(zip(old.steps, new.steps)):
        for field in ("name", "kind", "inputs", "outputs", "tactic", "fused_from", "precision"):
            if getattr(a, field) != getattr(b, field):
                return (f"step {index} ({a.name!r}) has the {field} {_brief(getattr(b, field))} instead of "
                        f"{_brief(getattr(a, field))}")
        problem = _attribute_difference(_op_json(a.op), _op_json(b.op), "")
        if problem:
            return f"step {index} ({a.name!r}) has {problem}"
    for field in ("tensors", "weights"):
        specs_old, specs_new = getattr(old, field), getattr(new, field)
        for a, b in zip(specs_old, specs_new):
            if a != b:
                return f"{field[:-1]} {a.name!r} becomes {b.name!r} {b.dtype.value} {list(b.shape)}"
        if len(specs_old) != len(specs_new):
            return f"it has {len(specs_new)} {field} instead of {len(specs_old)}"
    return ""


def _op_json(op) -> Any:
    from ..ir.serialize import op_to_json

    return op_to_json(op)


def _attribute_difference(a: Any, b: Any, where: str) -> str:
    """Attributes may differ in floating values only (a constant folded into an attribute is a weight)."""
    if isinstance(a, float) and isinstance(b, float):
        return ""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return next((p for key in a if (p := _attribute_difference(a[key], b[key], f"{where}.{key}"))), "")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((p for i, (x, y) in enumerate(zip(a, b)) if (p := _attribute_difference(x, y, f"{where}[{i}]"))),
                    "")
    if type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))):
        return ""
    return f"the attribute {where.lstrip('.') or 'op'} {_brief(b)} instead of {_brief(a)}"


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
