"""CUDA-specific kernels (cuDNN fusions, Triton kernels). Every layer kind also runs on CUDA through its
portable PyTorch kernel in kernels/cpu; the tactic selector times the candidates on the target GPU.
Every module of this package registers its kernels when imported."""
import functools
import importlib
import pkgutil


@functools.cache
def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
