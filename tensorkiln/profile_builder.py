"""Engines with optimization profiles, build side: a model source, the recipe that turns it into an engine for one
concrete shape, and `build_with_profiles`.

How a range of shapes runs: every pass and kernel of tensorkiln works on fixed shapes (exporters compute reshape
targets from Shape ops, which the importer folds), so an engine with profiles holds the model itself and the recipe,
and is *specialized* for each concrete input shape: imported at that shape, optimized, and lowered with the tactics
the profile's opt shape was tuned to (no timing). The specializations of min, opt and max are built ahead and kept
in the engine file; others are built on first use and kept in a bounded cache (runtime/profiles.py). Each concrete
shape thus runs exactly the engine a fixed-shape build would make, at its speed.

The model in the engine file is data: it goes through the same importer as any model file (which refuses what it
cannot validate), never through code loaded from the file.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .builder import Builder, BuilderConfig, Target
from .errors import BuildError, ShapeError
from .limits import ResourceLimits
from .network import NetworkDefinition
from .plan.profiles import OptimizationProfile, Shape
from .plan.schema import PlanProblem
from .quant.precision import Precision
from .weight_sharing import WeightCache

log = logging.getLogger("tensorkiln.profiles")

# source kind -> function(ModelSource, input shapes, input values, limits) -> NetworkDefinition
SOURCE_PARSERS: dict[str, Callable[..., NetworkDefinition]] = {}


def source_parser(kind: str):
    def register(fn):
        if kind in SOURCE_PARSERS:
            raise ValueError(f"model source kind {kind!r} is registered twice")
        SOURCE_PARSERS[kind] = fn
        return fn
    return register


@source_parser("onnx")
def _parse_onnx_source(source: "ModelSource", shapes, values, limits: ResourceLimits):
    from .importers.onnx import parse_onnx

    # decoded once per source and kept: the protobuf parse was a third of a specialization (BERT-base: 2.5 of 7 s).
    # The importer reads the ModelProto and never changes it.
    if "onnx_model" not in source.decoded:
        source.decoded["onnx_model"] = parse_onnx_proto(source.model)
    model = source.decoded["onnx_model"]
    declared = {value.name: value.type.tensor_type.elem_type for value in model.graph.input}
    values = {name: np.asarray(value, dtype=_numpy_dtype(declared.get(name))) for name, value in values.items()}
    # the initializers too: decoding them was a third of a specialization (ResNet-50 on the CPU: 120 of 250 ms)
    return parse_onnx(model, input_shapes=shapes, input_values=values or None,
                      allow_fallback=source.allow_fallback, limits=limits,
                      decoded_initializers=source.decoded.setdefault("initializers", {}))


def _numpy_dtype(elem_type: int | None):
    """The numpy dtype of an ONNX input's element type (a shape tensor's values take it), int64 where unknown."""
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else np.int64
    except (KeyError, ValueError, TypeError):
        return np.int64


def parse_onnx_proto(model: bytes):
    """The ModelProto of ONNX bytes, through the importer's reader (its errors are one ModelFormatError)."""
    from .importers.onnx.parser import load_model

    return load_model(model)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model as the engine keeps it to specialize new shapes: its bytes, and the import options."""
    kind: str
    model: bytes
    input_values: tuple[tuple[str, np.ndarray], ...] = ()
    allow_fallback: bool = False
    # what the parser of the kind decoded from `model`, kept for the next specialization (not part of equality)
    decoded: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_onnx(cls, model: str | Path | bytes, input_values: Mapping[str, np.ndarray] | None = None,
                  allow_fallback: bool = False) -> "ModelSource":
        """An ONNX model from a path (external data included) or bytes."""
        if not isinstance(model, bytes):
            import onnx

            model = onnx.load(str(model), load_external_data=True).SerializeToString()
        values = tuple((name, np.asarray(value)) for name, value in (input_values or {}).items())
        return cls("onnx", model, values, allow_fallback)

    @property
    def weight_cache(self) -> WeightCache:
        """The engine weights of this model's specializations, each made (and moved to the device) once."""
        return self.decoded.setdefault("weights", WeightCache())

    def parse(self, shapes: Mapping[str, Shape], limits: ResourceLimits,
              values: Mapping[str, Shape] | None = None) -> NetworkDefinition:
        """The network at these input shapes, with the shape tensors' `values` (and the values fixed at import)."""
        parser = SOURCE_PARSERS.get(self.kind)
        if parser is None:
            raise BuildError(f"models of kind {self.kind!r} cannot be specialized; the kinds are "
                             f"{sorted(SOURCE_PARSERS)}")
        return parser(self, dict(shapes), {**dict(self.input_values), **dict(values or {})}, limits)


@dataclasses.dataclass(frozen=True)
class SpecializationRecipe:
    """The build options an engine with profiles specializes with (a BuilderConfig's plain part).
    `tune_each_shape`: time the tactics of each new shape (slower first runs) instead of taking the opt shape's."""
    target: str = "cpu"
    precision: str = "fp32"
    passes: tuple[str, ...] = ()
    opt_level: int = 3
    layer_precisions: tuple[tuple[str, str], ...] = ()
    disabled_tactic_sources: tuple[str, ...] = ()
    tune_each_shape: bool = False

    @classmethod
    def from_config(cls, config: BuilderConfig, tune_each_shape: bool = False) -> "SpecializationRecipe":
        if config.precision is Precision.INT8:
            raise BuildError("INT8 engines with optimization profiles are not supported yet: build an INT8 engine per "
                             "shape (--shapes), or an FP16/FP32 engine with profiles")
        return cls(config.target.value, config.precision.value, tuple(config.passes), config.opt_level,
                   tuple((name, p.value) for name, p in config.layer_precisions),
                   tuple(config.disabled_tactic_sources), tune_each_shape)

    def builder_config(self, limits: ResourceLimits, hints: Sequence[tuple[str, str]] = ()) -> BuilderConfig:
        return BuilderConfig(target=Target(self.target), precision=Precision(self.precision),
                             layer_precisions=tuple((n, Precision(p)) for n, p in self.layer_precisions),
                             opt_level=self.opt_level, passes=self.passes,
                             disabled_tactic_sources=self.disabled_tactic_sources, limits=limits,
                             tactic_hints=() if self.tune_each_shape else tuple(hints))

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "precision": self.precision, "passes": list(self.passes),
                "opt_level": self.opt_level, "layer_precisions": [list(p) for p in self.layer_precisions],
                "disabled_tactic_sources": list(self.disabled_tactic_sources), "tune_each_shape": self.tune_each_shape}

    @classmethod
    def from_json(cls, data: Any) -> "SpecializationRecipe":
        """The recipe of an engine file, every field checked (PlanProblem naming it)."""
        from .passes.manager import PIPELINE_ORDER
        from .tactics.selection import TACTIC_SOURCES

        if not isinstance(data, dict) or set(data) != set(cls().to_json()):
            raise PlanProblem(f"the build recipe must have exactly the keys {sorted(cls().to_json())}")
        if data["target"] not in ("cpu", "cuda"):
            raise PlanProblem(f"build recipe: target {data['target']!r} is not cpu or cuda")
        precisions = {p.value for p in Precision} - {"int8"}
        if data["precision"] not in precisions:
            raise PlanProblem(f"build recipe: precision {data['precision']!r} is not one of {sorted(precisions)}")
        passes = data["passes"]
        if not isinstance(passes, list) or not all(isinstance(p, str) and p in PIPELINE_ORDER for p in passes):
            raise PlanProblem(f"build recipe: passes must be a list of the passes {', '.join(PIPELINE_ORDER)}")
        level = data["opt_level"]
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 5:
            raise PlanProblem("build recipe: opt_level must be an integer from 0 to 5")
        pairs = data["layer_precisions"]
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and p[1] in precisions for p in pairs):
            raise PlanProblem("build recipe: layer_precisions must be a list of [layer name, precision]")
        sources = data["disabled_tactic_sources"]
        if not isinstance(sources, list) or not all(isinstance(s, str) and s in TACTIC_SOURCES for s in sources):
            raise PlanProblem(f"build recipe: disabled_tactic_sources must name tactic sources ({TACTIC_SOURCES})")
        if not isinstance(data["tune_each_shape"], bool):
            raise PlanProblem("build recipe: tune_each_shape must be true or false")
        return cls(data["target"], data["precision"], tuple(passes), level, tuple(tuple(p) for p in pairs),
                   tuple(sources), data["tune_each_shape"])


def specialize(source: ModelSource, recipe: SpecializationRecipe, profile: OptimizationProfile,
               point: Mapping[str, Shape], hints: Sequence[tuple[str, str]] = (), limits: ResourceLimits | None = None):
    """The engine of `source` for one concrete `point` of a profile (input shapes and shape-tensor values), built
    by `recipe` (with `hints`' tactics)."""
    limits = limits or ResourceLimits()
    shapes, values = _split_point(profile, point)
    network = source.parse(shapes, limits, values)
    return _shared(Builder(recipe.builder_config(limits, hints), source.weight_cache).build(network), source)


def _shared(engine, source: ModelSource):
    """`engine`, sharing its device weights with the model's other engines."""
    engine.weight_cache = source.weight_cache
    return engine


def _split_point(profile: OptimizationProfile, point: Mapping[str, Shape]) -> tuple[dict, dict]:
    """(input shapes, shape-tensor values) of a point."""
    values = {name for name, _ in profile.values}
    return ({n: s for n, s in point.items() if n not in values}, {n: s for n, s in point.items() if n in values})


def tactic_hints(engine) -> tuple[tuple[str, str], ...]:
    """(step name, tactic) of an engine: what its specializations take instead of timing."""
    return tuple((step.name, step.tactic) for step in engine.plan.steps)


def build_with_profiles(source: ModelSource, profiles: Sequence[OptimizationProfile],
                        config: BuilderConfig | None = None, tune_each_shape: bool = False,
                        prebuild: str = "min,opt,max", on_variant: Callable[[str], None] | None = None):
    """An engine that runs every input shape in `profiles` (runtime/profiles.py ProfiledEngine).

    Each profile is tuned at its opt shape (`config`'s tactic timing); its min and max shapes (`prebuild`: the
    comma-separated subset of min, opt, max built ahead; opt always is) are built with those tactics, which proves
    the range builds and tells which output dims vary. Other shapes are specialized on first use."""
    from .runtime.profiles import ProfiledEngine

    config = config or BuilderConfig()
    recipe = SpecializationRecipe.from_config(config, tune_each_shape)
    if not profiles:
        raise BuildError("give at least one optimization profile (min, opt and max shapes of the inputs)")
    which = [w.strip() for w in prebuild.split(",") if w.strip()]
    unknown = sorted(set(which) - {"min", "opt", "max"})
    if unknown:
        raise BuildError(f"--prebuild takes min, opt and max, not {unknown}")
    variants = []
    for index, profile in enumerate(profiles):
        opt = _build_variant(source, recipe, profile, profile.point("opt"), (), config, index, "opt", on_variant)
        variants.append((index, profile.point("opt"), opt))
        for bound in ("min", "max"):
            point = profile.point(bound)
            if bound in which and all(point != built for i, built, _ in variants if i == index):
                engine = _build_variant(source, recipe, profile, point, tactic_hints(opt), config, index, bound,
                                        on_variant)
                variants.append((index, point, engine))
    return ProfiledEngine(tuple(profiles), recipe, source, variants)


def _build_variant(source, recipe, profile, point, hints, config, index, bound, on_variant):
    description = ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in point.items())
    if on_variant:
        on_variant(f"profile {index} {bound} ({description})")
    builder_config = recipe.builder_config(config.limits, hints)
    if not hints:  # the opt shape: tuned as the caller's config says (timing cache, verbosity, dumps)
        builder_config = dataclasses.replace(config, tactic_hints=())
    shapes, values = _split_point(profile, point)
    try:
        network = source.parse(shapes, config.limits, values)
    except ShapeError as error:
        raise BuildError(f"profile {index}: the model does not take its {bound} shapes ({description}): {error}") \
            from None
    return _shared(Builder(builder_config, source.weight_cache).build(network), source)
