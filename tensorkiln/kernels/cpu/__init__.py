"""CPU kernels on PyTorch's CPU operators; they double as the reference semantics of each layer kind.
Every module of this package is one op family; importing it registers its kernels."""
import functools
import importlib
import pkgutil


@functools.cache
def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
