"""Optimization profiles (TensorRT's IOptimizationProfile): for each input a min, opt and max shape.

An engine built with profiles runs any input shape inside one of them. The builder tunes each profile at its opt
shape; the runtime specializes the engine for each concrete shape it meets (runtime/profiles.py).

Profiles are configuration (frozen dataclasses) and part of the engine file, so they are read as hostile input:
`profiles_from_json` checks every field and raises PlanProblem naming it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from .schema import PlanProblem

Shape = tuple[int, ...]
MAX_PROFILES = 64
MAX_RANK = 16
MAX_DIM = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ShapeRange:
    """The shapes one input may take in a profile: every dim of min <= opt <= max, dim by dim."""
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self):
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"min {self.min}, opt {self.opt} and max {self.max} have different ranks")
        for low, mid, high in zip(self.min, self.opt, self.max):
            if not 0 <= low <= mid <= high:
                raise ValueError(f"min {self.min} <= opt {self.opt} <= max {self.max} does not hold dim by dim")

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    @property
    def is_fixed(self) -> bool:
        return self.min == self.max

    def describe(self) -> str:
        return f"min {_dims(self.min)} opt {_dims(self.opt)} max {_dims(self.max)}"


@dataclasses.dataclass(frozen=True)
class ValueRange:
    """The values a shape tensor (an integer input whose values set shapes, e.g. a reshape target or a size) may
    take in a profile: element by element min <= opt <= max, as TensorRT bounds shape tensors."""
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self):
        ShapeRange(self.min, self.opt, self.max)  # the same rule, element by element (non-negative values)

    def contains(self, values: Sequence[int]) -> bool:
        return len(values) == len(self.min) and all(lo <= v <= hi for lo, v, hi in zip(self.min, values, self.max))

    def describe(self) -> str:
        return f"min {list(self.min)} opt {list(self.opt)} max {list(self.max)}"


@dataclasses.dataclass(frozen=True)
class OptimizationProfile:
    """Shape ranges by input name, and value ranges of shape tensors. Inputs a profile does not name keep the shape
    the model gives them. An engine holds its shape tensors' values fixed per specialization: they are inputs of
    the profiled engine, not of the fixed-shape engines inside it."""
    ranges: tuple[tuple[str, ShapeRange], ...]
    values: tuple[tuple[str, ValueRange], ...] = ()

    def __post_init__(self):
        names = [name for name, _ in (*self.ranges, *self.values)]
        if len(set(names)) != len(names):
            raise ValueError(f"a profile names an input twice: {names}")

    def range_of(self, name: str) -> ShapeRange | None:
        return dict(self.ranges).get(name)

    def value_range_of(self, name: str) -> ValueRange | None:
        return dict(self.values).get(name)

    def opt_shapes(self) -> dict[str, Shape]:
        return {name: r.opt for name, r in self.ranges}

    def opt_values(self) -> dict[str, Shape]:
        return {name: r.opt for name, r in self.values}

    def point(self, bound: str) -> dict[str, Shape]:
        """The shapes and shape-tensor values of one bound ("min", "opt" or "max"): what a specialization fixes."""
        return {name: getattr(r, bound) for name, r in (*self.ranges, *self.values)}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in (*self.ranges, *self.values))

    def problem_with(self, shapes: Mapping[str, Sequence[int]],
                     values: Mapping[str, Sequence[int]] | None = None) -> str:
        """'' if every named input's shape (and shape tensor's values) lies in this profile, else what does not."""
        values = shapes if values is None else values  # one mapping may hold both (a specialization's point)
        for name, shape_range in self.ranges:
            shape = shapes.get(name)
            if shape is not None and not shape_range.contains(shape):
                return f"input {name!r} of shape {_dims(shape)} is outside {shape_range.describe()}"
        for name, value_range in self.values:
            given = values.get(name)
            if given is not None and not value_range.contains(given):
                return f"shape tensor {name!r} with values {list(given)} is outside {value_range.describe()}"
        return ""

    def to_json(self) -> dict[str, Any]:
        return {**{name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for name, r in self.ranges},
                **{name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max), "values": True}
                   for name, r in self.values}}


def profiles_from_shape_specs(min_shapes: Sequence[Mapping[str, Shape]], opt_shapes: Sequence[Mapping[str, Shape]],
                              max_shapes: Sequence[Mapping[str, Shape]],
                              shape_tensors: Sequence[str] = ()) -> tuple[OptimizationProfile, ...]:
    """Profiles from trtexec-style lists: the k-th min, opt and max map make profile k. An input given only an opt
    shape gets it as min and max too; with min and max but no opt, opt is max (TensorRT tunes where the work is).
    For the inputs named in `shape_tensors` the "shapes" are their values (as trtexec reads them)."""
    count = max(len(min_shapes), len(opt_shapes), len(max_shapes))
    profiles = []
    for index in range(count):
        lows, mids, highs = (dict(specs[index]) if index < len(specs) else {}
                             for specs in (min_shapes, opt_shapes, max_shapes))
        ranges, values = [], []
        for name in dict.fromkeys([*lows, *mids, *highs]):
            mid = mids.get(name) or highs.get(name) or lows.get(name)
            low, high = lows.get(name, mid), highs.get(name, mid)
            kind, found = (ValueRange, values) if name in shape_tensors else (ShapeRange, ranges)
            try:
                found.append((name, kind(tuple(low), tuple(mid), tuple(high))))
            except ValueError as error:
                raise ValueError(f"profile {index}, input {name!r}: {error}") from None
        profiles.append(OptimizationProfile(tuple(ranges), tuple(values)))
    return tuple(profiles)


def profiles_from_json(data: Any, where: str = "profiles") -> tuple[OptimizationProfile, ...]:
    """Profiles from an engine file's JSON; PlanProblem naming the field where anything is off."""
    if not isinstance(data, list) or not 1 <= len(data) <= MAX_PROFILES:
        raise PlanProblem(f"{where} must be a list of 1 to {MAX_PROFILES} profiles")
    profiles = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or not entry:
            raise PlanProblem(f"{where}[{index}] must map input names to shape ranges")
        ranges, values = [], []
        for name, bounds in entry.items():
            field = f"{where}[{index}][{name!r}]"
            if not isinstance(bounds, dict) or set(bounds) - {"values"} != {"min", "opt", "max"} or bounds.get(
                    "values", True) is not True:
                raise PlanProblem(f"{field} must have exactly the keys min, opt and max (and values: true for a "
                                  "shape tensor)")
            shapes = [_shape(bounds[key], f"{field}.{key}") for key in ("min", "opt", "max")]
            try:
                (values if "values" in bounds else ranges).append(
                    (name, (ValueRange if "values" in bounds else ShapeRange)(*shapes)))
            except ValueError as error:
                raise PlanProblem(f"{field}: {error}") from None
        profiles.append(OptimizationProfile(tuple(ranges), tuple(values)))
    return tuple(profiles)


def _shape(value: Any, where: str) -> Shape:
    if not isinstance(value, list) or len(value) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in value):
        raise PlanProblem(f"{where} must be a list of at most {MAX_RANK} sizes in [0, {MAX_DIM}]")
    if math.prod(value) > 2**40:
        raise PlanProblem(f"{where} has {math.prod(value)} elements, past any engine's inputs")
    return tuple(value)


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"
