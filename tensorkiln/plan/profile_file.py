"""Engine files with optimization profiles (engine format version 2; fixed-shape engines stay version 1).

The same safetensors container as version 1 (plan/file_format.py). Its metadata holds the profiles, the build
recipe, the model source's description and the engines built ahead ("variants": each a version-1 plan with its
concrete input shapes and a map from its weight names to stored tensors); the tensors are the model source's bytes
(`source`, uint8), the values fixed at import (`value.<i>`) and the variants' weights (`w.<i>`, stored once where
variants share them). Every field is checked before use, as for version 1; the model source is only ever read by
the importer of its kind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import torch

from ..errors import EngineFormatError
from .file_format import (_SAFETENSORS_DTYPES, MAGIC, _load_weights, _metadata, _split, _tensor_entries, _version,
                          save_sealed)
from .profiles import profiles_from_json
from .schema import PlanProblem
from .validate import read_plan

PROFILED_FORMAT_VERSION = 2
MAX_VARIANTS = 1024
_REBUILD = "rebuild the engine from the model with `kiln build`"
_FIELDS = ("profiles", "recipe", "source", "variants")


def is_profiled(blob: bytes, source: str = "engine") -> bool:
    """Whether `blob` is a tensorkiln engine of format version 2 (its header only; errors are left to the readers)."""
    try:
        header, _ = _split(blob, source)
        metadata = _metadata(header, source)
    except EngineFormatError:
        return False
    return metadata.get("format") == MAGIC and metadata.get("format_version") == str(PROFILED_FORMAT_VERSION)


def serialize_profiled(engine) -> bytes:
    tensors: dict[str, torch.Tensor] = {"source": torch.frombuffer(bytearray(engine.source.model), dtype=torch.uint8)}
    for index, (_, value) in enumerate(engine.source.input_values):
        tensors[f"value.{index}"] = torch.from_numpy(np.ascontiguousarray(value).copy())
    stored: dict[tuple, str] = {}  # (dtype, shape, sha256 of the bytes) -> stored name: variants share weights
    # a tensor the variants share as one object (weight_sharing.py) is hashed once: BERT-base's three variants
    # hashed 1.3 GB of weights, most of them the same tensors
    by_object: dict[int, tuple[torch.Tensor, str]] = {}
    variants = []
    for profile, shapes, variant in engine.built_ahead():
        names = {}
        for name, original in variant.weights.items():
            known = by_object.get(id(original))
            if known is not None and known[0] is original:
                names[name] = known[1]
                continue
            weight = original.detach().cpu().contiguous()
            raw = weight.view(torch.uint8) if weight.dim() else weight.reshape(1).view(torch.uint8)
            key = (str(weight.dtype), tuple(weight.shape), hashlib.sha256(raw.numpy().tobytes()).hexdigest())
            if key not in stored:
                stored[key] = f"w.{len(stored)}"
                tensors[stored[key]] = weight
            names[name] = stored[key]
            by_object[id(original)] = (original, stored[key])
        variants.append({"profile": profile, "shapes": {n: list(s) for n, s in shapes.items()},
                         "plan": variant.plan.to_json(), "weights": names})
    fields = {"profiles": [p.to_json() for p in engine.profiles], "recipe": engine.recipe.to_json(),
              "source": {"kind": engine.source.kind, "allow_fallback": engine.source.allow_fallback,
                         "input_values": [name for name, _ in engine.source.input_values]},
              "variants": variants}
    metadata = {"format": MAGIC, "format_version": str(PROFILED_FORMAT_VERSION), "tensorkiln_version": _version(),
                **{key: json.dumps(value, separators=(",", ":")) for key, value in fields.items()}}
    return save_sealed(tensors, metadata, lambda data: _checksum(metadata, data))


@dataclasses.dataclass(frozen=True)
class ProfiledFile:
    """What a version-2 engine file holds, validated, before any Engine is made (kiln inspect stops here)."""
    profiles: tuple
    recipe: Any
    source: Any  # profile_builder.ModelSource
    variants: tuple  # (profile index, {input: shape}, Plan, {weight name: tensor})


def read_profiled(blob: bytes, source: str = "engine") -> ProfiledFile:
    """The validated contents of a version-2 engine file; every field checked (one EngineFormatError line)."""
    from ..profile_builder import ModelSource, SpecializationRecipe
    from ..runtime.profiles import shape_key

    header, data = _split(blob, source)
    metadata = _metadata(header, source)
    entries = _tensor_entries(header, source)
    _check_tiling(entries, len(data), source)
    if metadata.get("checksum") != _checksum(metadata, data):
        raise EngineFormatError(f"{source} is corrupted: its checksum does not match its contents; {_REBUILD} "
                                "or copy the file again")
    try:
        fields = {key: json.loads(metadata.get(key, "")) for key in _FIELDS}
    except (ValueError, RecursionError):
        raise EngineFormatError(f"{source} has profile fields that are not readable JSON; {_REBUILD}") from None
    try:
        profiles = profiles_from_json(fields["profiles"])
        recipe = SpecializationRecipe.from_json(fields["recipe"])
        kind, allow_fallback, value_keys = _model_source(fields["source"], entries)
        specs = _variant_specs(fields["variants"], profiles, entries)
    except PlanProblem as problem:
        raise EngineFormatError(f"{source}: {problem}; {_REBUILD}") from None
    variants = []
    for position, (profile, shapes, plan_data, names) in enumerate(specs):
        where = f"{source}, variant {position}"
        plan = read_plan(plan_data, where)
        _check_variant(plan, shapes, names, entries, recipe.target, where)
        variants.append((profile, shapes, plan, names))
    seen = {(p, shape_key(s)) for p, s, _, _ in variants}
    for index, profile in enumerate(profiles):
        if (index, shape_key(profile.point("opt"))) not in seen:
            raise EngineFormatError(f"{source}: profile {index} has no engine built for its opt shapes; {_REBUILD}")
    tensors = _load_weights(blob, source)
    model = ModelSource(kind, tensors["source"].numpy().tobytes(),
                        tuple((name, tensors[key].numpy()) for name, key in value_keys), allow_fallback)
    return ProfiledFile(profiles, recipe, model, tuple(
        (profile, shapes, plan, {name: tensors[key] for name, key in names.items()})
        for profile, shapes, plan, names in variants))


def deserialize_profiled(blob: bytes, source: str = "engine"):
    """The ProfiledEngine of a version-2 engine file (read_profiled, then an Engine per variant)."""
    from ..plugins import check_plugins
    from ..runtime.engine import Engine
    from ..runtime.profiles import ProfiledEngine

    contents = read_profiled(blob, source)
    for _, _, plan, _ in contents.variants:
        check_plugins(plan.steps)
    variants = [(profile, shapes, Engine(plan, weights)) for profile, shapes, plan, weights in contents.variants]
    return ProfiledEngine(contents.profiles, contents.recipe, contents.source, variants)


def _model_source(data: Any, entries: dict) -> tuple[str, bool, list[tuple[str, str]]]:
    from ..profile_builder import SOURCE_PARSERS

    if not isinstance(data, dict) or set(data) != {"kind", "allow_fallback", "input_values"}:
        raise PlanProblem("source must have exactly the keys allow_fallback, input_values and kind")
    if data["kind"] not in SOURCE_PARSERS:
        raise PlanProblem(f"source kind {data['kind']!r} is not one of {sorted(SOURCE_PARSERS)}")
    if not isinstance(data["allow_fallback"], bool):
        raise PlanProblem("source.allow_fallback must be true or false")
    names = data["input_values"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise PlanProblem("source.input_values must be a list of distinct input names")
    keys = [f"value.{i}" for i in range(len(names))]
    if entries.get("source", ("",))[0] != "U8" or len(entries["source"][1]) != 1:
        raise PlanProblem("the model source must be stored as the 1-D uint8 tensor 'source'")
    missing = [key for key in keys if key not in entries]
    if missing:
        raise PlanProblem(f"the input values {missing} are not stored")
    return data["kind"], data["allow_fallback"], list(zip(names, keys))


def _variant_specs(data: Any, profiles, entries: dict) -> list[tuple[int, dict, Any, dict]]:
    if not isinstance(data, list) or not 1 <= len(data) <= MAX_VARIANTS:
        raise PlanProblem(f"variants must be a list of 1 to {MAX_VARIANTS} engines")
    specs = []
    for position, variant in enumerate(data):
        where = f"variants[{position}]"
        if not isinstance(variant, dict) or set(variant) != {"profile", "shapes", "plan", "weights"}:
            raise PlanProblem(f"{where} must have exactly the keys plan, profile, shapes and weights")
        profile = variant["profile"]
        if not isinstance(profile, int) or isinstance(profile, bool) or not 0 <= profile < len(profiles):
            raise PlanProblem(f"{where}.profile must be a profile index from 0 to {len(profiles) - 1}")
        shapes = variant["shapes"]  # input shapes, and the values of shape tensors
        ranges = {**dict(profiles[profile].ranges), **dict(profiles[profile].values)}
        if not isinstance(shapes, dict) or set(shapes) != set(ranges):
            raise PlanProblem(f"{where}.shapes must give exactly the inputs {sorted(ranges)}")
        for name, shape in shapes.items():
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape) \
                    or not ranges[name].contains(shape):
                raise PlanProblem(f"{where}.shapes[{name!r}] is not in {ranges[name].describe()}")
        names = variant["weights"]
        if not isinstance(names, dict) or not all(isinstance(v, str) and v.startswith("w.") and v in entries
                                                  for v in names.values()):
            raise PlanProblem(f"{where}.weights must map weight names to stored tensors w.<i>")
        specs.append((profile, {n: tuple(s) for n, s in shapes.items()}, variant["plan"], names))
    return specs


def _check_variant(plan, shapes: dict, names: dict, entries: dict, target: str, where: str) -> None:
    def problem(what: str) -> EngineFormatError:
        return EngineFormatError(f"{where}: {what}; {_REBUILD}")

    if plan.target != target:
        raise problem(f"its plan targets {plan.target}, the engine's recipe {target}")
    for spec in plan.inputs:
        if spec.name in shapes and tuple(spec.shape) != shapes[spec.name]:
            raise problem(f"input {spec.name!r} has shape {spec.shape} in the plan and {shapes[spec.name]} in the "
                          "variant")
    expected = {spec.name: spec for spec in plan.weights}
    if set(expected) != set(names):
        raise problem(f"its plan needs the weights {sorted(expected)} but the variant maps {sorted(names)}")
    for name, key in names.items():
        code, shape, _ = entries[key]
        spec = expected[name]
        if code != _SAFETENSORS_DTYPES.get(spec.dtype) or shape != tuple(spec.shape):
            raise problem(f"weight {name!r} is stored as {code} {shape}, but the plan says {spec.dtype.value} "
                          f"{tuple(spec.shape)}")


def _check_tiling(entries: dict, data_len: int, source: str) -> None:
    position = 0
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if begin != position:
            raise EngineFormatError(f"{source} is corrupted: tensor {name!r} starts at byte {begin}, not at "
                                    f"{position}; {_REBUILD}")
        position = end
    if position != data_len:
        raise EngineFormatError(f"{source} is truncated or corrupted: its tensors end at byte {position} of "
                                f"{data_len}; {_REBUILD} or copy the file again")


def _checksum(metadata: dict, data: bytes) -> str:
    digest = hashlib.sha256()
    for key in _FIELDS:
        digest.update(metadata.get(key, "").encode("utf-8", "replace"))
        digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


__all__ = ["PROFILED_FORMAT_VERSION", "deserialize_profiled", "is_profiled", "serialize_profiled"]
