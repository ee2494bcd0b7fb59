"""Registry of Caffe layer converters, keyed by the V2 layer type name, filled by `@caffe_converter`.

A converter is `fn(ctx, layer) -> list of output tensors` (one per top). It reads the layer's parameters
(`layer.convolution_param`, ...) and its trained blobs through the CaffeContext, and adds layers through
`ctx.network` (the NetworkDefinition API). V1 layers come with the same parameter fields, so one converter
serves both layouts.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Callable

_CONVERTERS: dict[str, Callable] = {}


def caffe_converter(*type_names: str):
    """Register a converter for the Caffe layer types `type_names` (V2 names: "Convolution", "ReLU", ...)."""

    def register(fn):
        for type_name in type_names:
            if type_name in _CONVERTERS:
                raise ValueError(f"Caffe converter for layer type {type_name!r} is registered twice")
            _CONVERTERS[type_name] = fn
        return fn

    return register


def find_converter(type_name: str) -> Callable | None:
    _load_builtin()
    return _CONVERTERS.get(type_name)


def supported_layer_types() -> list[str]:
    _load_builtin()
    return sorted(_CONVERTERS)


@functools.cache
def _load_builtin() -> None:
    from . import layers  # every module of the package is one converter family

    for module in pkgutil.iter_modules(layers.__path__):
        importlib.import_module(f"{layers.__name__}.{module.name}")
