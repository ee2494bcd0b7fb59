"""The model repository: `<root>/<model>/<version>/model.engine` or `model.onnx`, with `<root>/<model>/config.pbtxt`.

Loading reads the config, takes the newest numeric version directory, builds (or reads from the cache) its engine
(engines.py: one engine with a batch profile for a batched model.onnx) and starts the model's scheduler, which
returns once every instance has run each batch size; a load of a loaded model swaps in the new one and drains the
old. Built engines are cached beside the source in `<version>/.kiln-cache/` and reused while newer than the source;
a cache that cannot be written (a read-only repository) only costs rebuilds.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np

from ..errors import TensorkilnError
from .config import ModelSettings, read_settings
from .datatypes import TO_WIRE
from .errors import InvalidRequest, ModelNotFound, ServeError, Unavailable
from .scheduler import Scheduler
from .stats import ModelStats

SOURCES = ("model.engine", "model.onnx")


@dataclasses.dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str  # wire name
    shape: tuple[int, ...]  # -1 for the batch dimension of a batched model
    numpy_dtype: np.dtype


class LoadedModel:
    def __init__(self, settings: ModelSettings, version: str, engines: dict, stats: ModelStats):
        self.settings = settings
        self.name = settings.name
        self.version = version
        self.stats = stats
        engine = next(iter(engines.values()))
        batched = settings.max_batch_size > 0
        self.inputs = tuple(_metadata(spec, batched) for spec in engine.inputs)
        self.outputs = tuple(_metadata(spec, batched) for spec in engine.outputs)
        self._inputs_by_name = {t.name: t for t in self.inputs}
        from .engines import is_profiled
        # an engine with profiles runs the dims its profile 0 allows: checked here, so that one request outside them
        # is refused alone instead of failing the batch it would join
        profile = engine.profiles[0] if is_profiled(engine) else None
        self._ranges = {t.name: profile.range_of(t.name) for t in self.inputs} if profile is not None else {}
        self.scheduler = Scheduler(settings, engines, stats)

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> int:
        """Validate names, dtypes and shapes; returns the request's batch rows. One line per problem, naming it."""
        unknown = sorted(set(inputs) - set(self._inputs_by_name))
        if unknown:
            raise InvalidRequest(f"model {self.name!r} has no input {unknown[0]!r}; its inputs are "
                                 f"{', '.join(self._inputs_by_name)}")
        missing = [name for name in self._inputs_by_name if name not in inputs]
        if missing:
            raise InvalidRequest(f"model {self.name!r}: input {missing[0]!r} is missing")
        rows = {}
        batched = self.settings.max_batch_size > 0
        for name, value in inputs.items():
            spec = self._inputs_by_name[name]
            if value.dtype != spec.numpy_dtype:
                raise InvalidRequest(f"model {self.name!r}: input {name!r} has datatype {_wire(value.dtype)}, "
                                     f"expected {spec.datatype}")
            expected = spec.shape
            batch_ok = not batched or 1 <= (value.shape[0] if value.ndim else 0) <= self.settings.max_batch_size
            if value.ndim != len(expected) or not batch_ok or any(
                    want not in (-1, got) for want, got in zip(expected, value.shape)):
                batch_note = f" with a batch of 1..{self.settings.max_batch_size}" if batched else ""
                raise InvalidRequest(f"model {self.name!r}: input {name!r} has shape {list(value.shape)}, "
                                     f"expected {list(expected)}{batch_note}")
            shape_range = self._ranges.get(name)
            skip = 1 if batched else 0  # the batch dimension is checked above, against max_batch_size
            if shape_range is not None and not all(low <= got <= high for low, got, high in zip(
                    shape_range.min[skip:], value.shape[skip:], shape_range.max[skip:])):
                raise InvalidRequest(f"model {self.name!r}: input {name!r} has shape {list(value.shape)}, outside "
                                     f"{_described(shape_range, skip)} (the engine's optimization profile)")
            rows[name] = value.shape[0] if batched else 1
        if len(set(rows.values())) > 1:
            raise InvalidRequest(f"model {self.name!r}: inputs have different batch sizes {rows}")
        return next(iter(rows.values()), 1)


def _metadata(spec, batched: bool) -> TensorMetadata:
    shape = (-1, *spec.shape[1:]) if batched else tuple(spec.shape)
    return TensorMetadata(spec.name, TO_WIRE[spec.dtype], shape, spec.dtype.numpy)


def _described(shape_range, skip: int) -> str:
    low, high = (list(shape_range.min[skip:]), list(shape_range.max[skip:]))
    return f"{low}..{high} after the batch dimension" if skip else f"{low}..{high}"


def _wire(dtype: np.dtype) -> str:
    from ..ir.dtypes import DataType
    for data_type, wire in TO_WIRE.items():
        if data_type is not DataType.BF16 and data_type.numpy == dtype:
            return wire
    return str(dtype)


@dataclasses.dataclass
class ModelState:
    state: str  # READY, UNAVAILABLE, LOADING, UNLOADING
    reason: str = ""
    version: str = ""


class ModelRepository:
    def __init__(self, root: Path, builder_config=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ServeError(f"model repository {self.root} is not a directory; pass the folder that holds "
                             "<model>/<version>/model.onnx")
        self._builder_config = builder_config
        self._models: dict[str, LoadedModel] = {}
        self._states: dict[str, ModelState] = {}
        self._stats: dict[str, ModelStats] = {}  # kept across reloads: counters never go back
        self._lock = threading.Lock()  # guards the three dicts
        self._load_lock = threading.Lock()  # one load or unload at a time

    def model_names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def index(self) -> list[dict]:
        with self._lock:
            states = dict(self._states)
        return [{"name": name, **({"version": s.version, "state": s.state, "reason": s.reason}
                                  if (s := states.get(name)) else {})} for name in self.model_names()]

    def get(self, name: str, version: str = "") -> LoadedModel:
        with self._lock:
            model = self._models.get(name)
            state = self._states.get(name)
        if model is None:
            if name in self.model_names() or state is not None:
                raise Unavailable(f"model {name!r} is not loaded ({state.state if state else 'UNAVAILABLE'}"
                                  f"{': ' + state.reason if state and state.reason else ''}); load it through "
                                  "the repository extension")
            raise ModelNotFound(f"no model {name!r} in the repository {self.root}")
        if version and version != model.version:
            raise ModelNotFound(f"model {name!r} has no version {version!r} loaded; version {model.version} is")
        return model

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def load_all(self) -> None:
        for name in self.model_names():
            try:
                self.load(name)
            except TensorkilnError:
                pass  # recorded in the model's state with its reason; the server serves the others

    def load(self, name: str) -> LoadedModel:
        with self._load_lock:
            if name not in self.model_names():
                raise ModelNotFound(f"no model {name!r} in the repository {self.root}")
            self._set_state(name, ModelState("LOADING"))
            try:
                model = self._build(self.root / name)
            except TensorkilnError as error:
                self._set_state(name, ModelState("UNAVAILABLE", str(error)))
                raise
            with self._lock:
                old = self._models.get(name)
                self._models[name] = model
                self._states[name] = ModelState("READY", version=model.version)
            if old is not None:
                old.scheduler.close()
            return model

    def unload(self, name: str) -> None:
        with self._load_lock:
            with self._lock:
                model = self._models.pop(name, None)
                if model is None:
                    if name not in self.model_names():
                        raise ModelNotFound(f"no model {name!r} in the repository {self.root}")
                    return
                self._states[name] = ModelState("UNLOADING", version=model.version)
            model.scheduler.close()  # answers what was queued, refuses what comes
            self._set_state(name, ModelState("UNAVAILABLE", "unloaded", model.version))

    def close(self) -> None:
        for model in self.loaded():
            model.scheduler.close()

    def _set_state(self, name: str, state: ModelState) -> None:
        with self._lock:
            self._states[name] = state

    def _build(self, model_dir: Path) -> LoadedModel:
        settings = read_settings(model_dir)
        version_dir = _latest_version(model_dir)
        from .engines import engines_for
        engines = engines_for(version_dir, settings, self._builder_config)
        with self._lock:
            stats = self._stats.setdefault(settings.name, ModelStats())
        return LoadedModel(settings, version_dir.name, engines, stats)


def _latest_version(model_dir: Path) -> Path:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()
                and any((p / source).exists() for source in SOURCES)]
    if not versions:
        raise ServeError(f"model {model_dir.name!r}: no version directory with {' or '.join(SOURCES)}; the layout "
                         f"is {model_dir}/1/model.onnx")
    return max(versions, key=lambda p: int(p.name))
