"""The plugin registry: type name -> plugin class, filled by `@register_plugin`, duplicates rejected.

The built-in plugins (tensorkiln.plugins.builtin) are registered on first use of the registry, so that a
user plugin that takes a built-in name fails at its own decorator, not later.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable, Iterable

from ..errors import BuildError, EngineFormatError
from .base import Plugin
from .params import params_from_json

_PLUGINS: dict[str, type[Plugin]] = {}
_INSTANCES: dict[tuple[type[Plugin], str], Plugin] = {}  # (class, params JSON) -> the shared instance


class UnknownPluginError(BuildError):
    """A network asks for a plugin type that is not registered."""


class MissingPluginError(EngineFormatError):
    """An engine needs a plugin that is not registered in this process."""


def register_plugin(type_name: str) -> Callable[[type[Plugin]], type[Plugin]]:
    """Register a Plugin subclass under `type_name` (the Caffe layer type or ONNX op type it implements)."""
    if not type_name or not isinstance(type_name, str):
        raise ValueError(f"a plugin type name must be a non-empty string, got {type_name!r}")

    def register(cls: type[Plugin]) -> type[Plugin]:
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise TypeError(f"@register_plugin({type_name!r}) decorates {cls!r}, which is not a subclass of "
                            "tensorkiln.plugins.Plugin")
        params = cls.Params
        if params is not None and not (dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen):
            raise TypeError(f"plugin {type_name!r}: Params must be a frozen dataclass "
                            "(@dataclasses.dataclass(frozen=True)) or None for a dict of JSON values")
        _load_builtin()
        if type_name in _PLUGINS:
            other = _PLUGINS[type_name]
            raise ValueError(f"plugin type {type_name!r} is registered twice: by {other.__module__}."
                             f"{other.__qualname__} and by {cls.__module__}.{cls.__qualname__}")
        cls.TYPE = type_name
        _PLUGINS[type_name] = cls
        return cls

    return register


def unregister_plugin(type_name: str) -> None:
    """Remove a registration (tests, notebooks that redefine a plugin)."""
    cls = _PLUGINS.pop(type_name, None)
    for key in [k for k in _INSTANCES if k[0] is cls]:
        del _INSTANCES[key]


def find_plugin(type_name: str) -> type[Plugin] | None:
    _load_builtin()
    return _PLUGINS.get(type_name)


def get_plugin(type_name: str) -> type[Plugin]:
    cls = find_plugin(type_name)
    if cls is None:
        raise UnknownPluginError(f"no plugin is registered under the type {type_name!r} (registered: "
                                 f"{registered_plugins()}); {register_hint(type_name)}")
    return cls


def registered_plugins() -> list[str]:
    _load_builtin()
    return sorted(_PLUGINS)


def register_hint(type_name: str) -> str:
    return (f"implement it as a plugin: a subclass of tensorkiln.plugins.Plugin decorated with "
            f"@tensorkiln.plugins.register_plugin({type_name!r}), in a module imported before the model is parsed")


def plugin_instance(type_name: str, params_json: str) -> Plugin:
    """The (shared, immutable) plugin object of a layer."""
    cls = get_plugin(type_name)
    key = (cls, params_json)
    instance = _INSTANCES.get(key)
    if instance is None:
        instance = _INSTANCES[key] = cls(params_from_json(cls.Params, params_json))
    return instance


def check_plugins(steps: Iterable[Any]) -> None:
    """Fail with a clear message when steps of an engine use plugins this process has not registered."""
    missing: dict[str, list[str]] = {}
    for step in steps:
        if step.kind != "plugin":
            continue
        if find_plugin(step.op.type) is None:
            missing.setdefault(step.op.type, []).append(step.name)
            continue
        try:  # the registered class must still accept the parameters the engine was built with
            plugin_instance(step.op.type, step.op.params_json)
        except (ValueError, TypeError) as error:
            raise MissingPluginError(f"layer {step.name!r}: the plugin {step.op.type!r} registered in this process "
                                     f"does not accept the engine's parameters {step.op.params_json} ({error}); "
                                     "rebuild the engine with this version of the plugin") from None
    if missing:
        listing = "; ".join(f"{kind!r} (layers {names})" for kind, names in sorted(missing.items()))
        raise MissingPluginError(
            f"the engine uses plugins that are not registered in this process: {listing}. Import the module "
            "that registers them (the one defining the class decorated with @register_plugin(...)) before "
            "loading the engine; engines store plugin types and parameters, never their code")


@functools.cache
def _load_builtin() -> None:
    importlib.import_module(f"{__package__}.builtin")  # its modules register the built-in plugins
