"""Engines with optimization profiles, run side: ProfiledEngine and its ProfiledExecutionContext (TensorRT's
engine with profiles, `set_optimization_profile` and `set_input_shape`).

A ProfiledEngine holds one fixed-shape Engine per concrete input shape it has met (profile_builder.py explains why):
those built ahead come from the engine file and stay; the others are specialized on first use and kept in a bounded
cache, least recently used out first. A context keeps one ExecutionContext per concrete shape, also bounded, so a
CUDA graph is captured once per shape and replayed whenever that shape comes back; switching to a shape met before
costs a dictionary lookup.
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..ir.dtypes import DataType
from ..plan import TensorSpec
from ..plan.profiles import OptimizationProfile, ShapeRange
from .engine import Engine, TensorIOMode

ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]
DEFAULT_SPECIALIZATIONS = 16  # engines specialized at run time, per ProfiledEngine
DEFAULT_CONTEXTS = 8  # concrete shapes (and CUDA graphs) per context


def shape_key(shapes: Mapping[str, Sequence[int]]) -> ShapeKey:
    return tuple(sorted((name, tuple(int(d) for d in shape)) for name, shape in shapes.items()))


class ProfiledEngine:
    """An engine that runs every input shape inside its optimization profiles."""

    def __init__(self, profiles: tuple[OptimizationProfile, ...], recipe, source,
                 variants: Sequence[tuple[int, Mapping[str, Sequence[int]], Engine]],
                 max_specializations: int = DEFAULT_SPECIALIZATIONS, limits=None):
        self.profiles = profiles
        self.recipe = recipe
        self.source = source
        self.limits = limits
        self.max_specializations = max_specializations
        self._built_ahead: dict[tuple[int, ShapeKey], Engine] = {
            (index, shape_key(shapes)): engine for index, shapes, engine in variants}
        for engine in self._built_ahead.values():  # the weights they share go to the device once (weight_sharing.py)
            engine.weight_cache = source.weight_cache
        self._specialized: collections.OrderedDict[tuple[int, ShapeKey], Engine] = collections.OrderedDict()
        self._opt = {index: self._built_ahead[(index, shape_key(p.point("opt")))] for index, p in enumerate(profiles)}
        self._lock = threading.Lock()
        self.specialization_seconds: list[float] = []  # how long each run-time specialization took
        first = self._opt[0]
        self.device = first.device
        self.plan = first.plan  # the opt shape's plan of profile 0: names, dtypes, tactics (for inspection)
        self._inputs = tuple(self._io_spec(t, TensorIOMode.INPUT) for t in first.plan.inputs) + tuple(
            # shape tensors: inputs of this engine, fixed in each engine it holds
            TensorSpec(name, DataType.INT64, (len(r.min),)) for name, r in profiles[0].values)
        self._outputs = tuple(self._io_spec(t, TensorIOMode.OUTPUT) for t in first.plan.outputs)

    # ---- profiles and I/O ---------------------------------------------------------------------
    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def get_tensor_profile_values(self, name: str, profile_index: int) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) values of shape tensor `name` in a profile (TensorRT's get_tensor_profile_values)."""
        value_range = self._profile(profile_index).value_range_of(name)
        if value_range is None:
            raise InputError(f"{name!r} is not a shape tensor of optimization profile {profile_index}")
        return value_range.min, value_range.opt, value_range.max

    def is_shape_tensor(self, name: str) -> bool:
        return any(p.value_range_of(name) is not None for p in self.profiles)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) of input `name` in a profile (TensorRT's get_tensor_profile_shape)."""
        shape_range = self._profile(profile_index).range_of(name)
        if shape_range is None:
            fixed = self._spec(name).shape
            return fixed, fixed, fixed
        return shape_range.min, shape_range.opt, shape_range.max

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        """The shape of an input or output, -1 where it varies within the profiles (as TensorRT reports it)."""
        return self._spec(name).shape

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._spec(name).dtype

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        self._spec(name)
        return TensorIOMode.INPUT if any(t.name == name for t in self._inputs) else TensorIOMode.OUTPUT

    def _spec(self, name: str) -> TensorSpec:
        for spec in (*self._inputs, *self._outputs):
            if spec.name == name:
                return spec
        names = sorted(t.name for t in (*self._inputs, *self._outputs))
        raise KeyError(f"engine has no input or output named {name!r}; it has {names}")

    def _io_spec(self, spec: TensorSpec, mode: TensorIOMode) -> TensorSpec:
        """`spec` with -1 in the dims that differ between the profiles' ranges (inputs) or built engines (outputs)."""
        if mode is TensorIOMode.INPUT:
            shapes = [s for p in self.profiles for r in [p.range_of(spec.name)] if r for s in (r.min, r.max)]
        else:
            shapes = [next(t.shape for t in e.plan.outputs if t.name == spec.name)
                      for e in self._built_ahead.values()]
        shape = tuple(d if all(len(s) == len(spec.shape) and s[i] == d for s in shapes) else -1
                      for i, d in enumerate(spec.shape))
        return TensorSpec(spec.name, spec.dtype, shape, spec.dim_names)

    def _profile(self, index: int) -> OptimizationProfile:
        if not isinstance(index, int) or not 0 <= index < len(self.profiles):
            raise InputError(f"optimization profile {index!r} does not exist; the engine has profiles 0 to "
                             f"{len(self.profiles) - 1}")
        return self.profiles[index]

    # ---- specializations ----------------------------------------------------------------------------
    def engine_for(self, profile_index: int, shapes: Mapping[str, Sequence[int]]) -> Engine:
        """The fixed-shape engine of `shapes` (every input a profile names; for a shape tensor its values) in a
        profile: built ahead, cached, or specialized now. Outside the profile: one InputError naming the input."""
        profile = self._profile(profile_index)
        missing = sorted(name for name in profile.names if name not in shapes)
        if missing:
            raise InputError(f"the shapes of inputs {missing} are not set; give them (set_input_shape, or the inputs "
                             "themselves)")
        problem = profile.problem_with(shapes)
        if problem:
            inside = [i for i, p in enumerate(self.profiles) if i != profile_index and not p.problem_with(shapes)]
            advice = (f"select profile {inside[0]} (set_optimization_profile({inside[0]}), --profile {inside[0]})"
                      if inside else "rebuild the engine with a profile that covers it (--minShapes/--maxShapes)")
            raise InputError(f"{problem} of optimization profile {profile_index}; {advice}")
        key = (profile_index, shape_key({name: shapes[name] for name in profile.names}))
        engine = self._built_ahead.get(key)
        if engine is not None:
            return engine
        with self._lock:  # one specialization per shape, whichever thread asks first
            engine = self._specialized.get(key)
            if engine is None:
                engine = self._specialize(profile_index, dict(key[1]))
                self._specialized[key] = engine
                while len(self._specialized) > self.max_specializations:
                    self._specialized.popitem(last=False)
            else:
                self._specialized.move_to_end(key)
            return engine

    def _specialize(self, profile_index: int, shapes: dict[str, tuple[int, ...]]) -> Engine:
        from ..profile_builder import specialize, tactic_hints

        start = time.perf_counter()
        engine = specialize(self.source, self.recipe, self.profiles[profile_index], shapes,
                            tactic_hints(self._opt[profile_index]), self.limits)
        self.specialization_seconds.append(time.perf_counter() - start)
        return engine

    @property
    def specialized_shapes(self) -> list[tuple[int, dict[str, tuple[int, ...]]]]:
        """(profile, shapes) of every engine held now: built ahead first, then the cache's, oldest first."""
        return [(index, dict(key)) for index, key in (*self._built_ahead, *self._specialized)]

    # ---- contexts and files -------------------------------------------------------------------------
    def create_execution_context(self, use_arena: bool = False, cuda_graph: bool | None = None, limits=None,
                                 max_shapes: int = DEFAULT_CONTEXTS) -> "ProfiledExecutionContext":
        return ProfiledExecutionContext(self, dict(use_arena=use_arena, cuda_graph=cuda_graph, limits=limits),
                                        max_shapes)

    @property
    def num_layers(self) -> int:
        return self._opt[0].num_layers

    @property
    def weights_nbytes(self) -> int:
        return self._opt[0].weights_nbytes

    @property
    def arena_nbytes(self) -> int:
        """The largest activation arena of the engines built ahead (the max shapes' where they are)."""
        return max(engine.arena_nbytes for engine in self._built_ahead.values())

    def built_ahead(self) -> list[tuple[int, dict[str, tuple[int, ...]], Engine]]:
        return [(index, dict(key), engine) for (index, key), engine in self._built_ahead.items()]

    def serialize(self) -> bytes:
        from ..plan.profile_file import serialize_profiled

        return serialize_profiled(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.serialize())


class ProfiledExecutionContext:
    """Runs a ProfiledEngine. Profile 0 is active until set_optimization_profile; the input shapes come from the
    inputs given to execute, or from set_input_shape (to ask output shapes before running, as TensorRT does)."""

    def __init__(self, engine: ProfiledEngine, context_options: dict[str, Any], max_shapes: int):
        self.engine = engine
        self._options = context_options
        self._max_shapes = max_shapes
        self._profile = 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._contexts: collections.OrderedDict[tuple[int, ShapeKey], Any] = collections.OrderedDict()
        self._lock = threading.RLock()

    @property
    def active_optimization_profile(self) -> int:
        return self._profile

    def set_optimization_profile(self, index: int) -> None:
        self.engine._profile(index)
        with self._lock:
            self._profile = index

    def set_input_shape(self, name: str, shape: Sequence[int]) -> None:
        """Set the shape of input `name` for get_tensor_shape; it must lie in the active profile."""
        if self.engine.get_tensor_mode(name) is not TensorIOMode.INPUT:
            raise InputError(f"{name!r} is an output; set_input_shape takes an input")
        shape = tuple(int(d) for d in shape)
        shape_range = self.engine.profiles[self._profile].range_of(name)
        fixed = self.engine.get_tensor_shape(name)
        if shape_range is None and shape != fixed:
            raise InputError(f"input {name!r} has the fixed shape {fixed}; no optimization profile varies it")
        if shape_range is not None and not shape_range.contains(shape):
            raise InputError(f"input {name!r} of shape {shape} is outside {shape_range.describe()} of optimization "
                             f"profile {self._profile}")
        with self._lock:
            self._shapes[name] = shape

    def set_input_values(self, name: str, values: Sequence[int]) -> None:
        """Set the values of shape tensor `name` for get_tensor_shape; they must lie in the active profile."""
        value_range = self.engine.profiles[self._profile].value_range_of(name)
        values = tuple(int(v) for v in np.asarray(values).reshape(-1))
        if value_range is None:
            raise InputError(f"{name!r} is not a shape tensor of optimization profile {self._profile}")
        if not value_range.contains(values):
            raise InputError(f"shape tensor {name!r} with values {list(values)} is outside {value_range.describe()} "
                             f"of optimization profile {self._profile}")
        with self._lock:
            self._shapes[name] = values

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        """An input's set shape, or an output's shape for the set input shapes (specializing if needed)."""
        if self.engine.get_tensor_mode(name) is TensorIOMode.INPUT:
            if self.engine.is_shape_tensor(name):
                return self.engine.get_tensor_shape(name)
            return self._shapes.get(name, self.engine.get_tensor_shape(name))
        engine = self.engine.engine_for(self._profile, self._shapes)
        return next(t.shape for t in engine.plan.outputs if t.name == name)

    def context_for(self, shapes: Mapping[str, Sequence[int]]):
        """The ExecutionContext of the engine for these input shapes in the active profile (made on first use)."""
        profile = self.engine.profiles[self._profile]
        named = {name: tuple(shapes[name]) for name in profile.names if name in shapes}
        key = (self._profile, shape_key(named))
        context = self._contexts.get(key)
        if context is None:
            context = self.engine.engine_for(self._profile, named).create_execution_context(**self._options)
            self._contexts[key] = context
            while len(self._contexts) > self._max_shapes:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(key)
        return context

    def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run on `inputs` ({name: array or tensor}) of any shapes in the active profile; see
        ExecutionContext.execute for what comes back."""
        with self._lock:
            point, feed = self._point_of(inputs)
            return self.context_for(point).execute(feed)

    __call__ = execute

    def execute_async(self, inputs: Mapping[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        with self._lock:
            point, feed = self._point_of(inputs)
            return self.context_for(point).execute_async(feed, stream)

    def _point_of(self, inputs: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
        """(the inputs' shapes, with the shape tensors' values, read on the host; the feed without the shape
        tensors, which the engine of the point holds fixed)."""
        if not isinstance(inputs, Mapping):
            raise InputError(f"inputs must be a mapping of input names to arrays, not {type(inputs).__name__}")
        profile = self.engine.profiles[self._profile]
        point, feed = {}, {}
        for name, value in inputs.items():
            if profile.value_range_of(name) is not None:
                values = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
                if values.dtype.kind not in "iu":
                    raise InputError(f"shape tensor {name!r} must hold integers, not {values.dtype}")
                point[name] = tuple(int(v) for v in values.reshape(-1))
            else:
                point[name] = tuple(getattr(value, "shape", ()))
                feed[name] = value
        return point, feed


__all__ = ["ProfiledEngine", "ProfiledExecutionContext", "ShapeRange"]
