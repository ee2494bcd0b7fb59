"""CPU kernels on PyTorch's CPU operators; they double as the reference semantics of each layer kind."""
import functools
import importlib

_MODULES = ("conv", "activation", "elementwise", "pooling", "linalg", "shape_ops", "resize")


@functools.cache
def load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
