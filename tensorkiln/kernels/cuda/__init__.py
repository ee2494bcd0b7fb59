"""CUDA-specific kernels (cuDNN fusions, Triton kernels). Every layer kind also runs on CUDA through its
portable PyTorch kernel in kernels/cpu; the tactic selector times the candidates on the target GPU."""
import functools
import importlib

_MODULES: tuple[str, ...] = ()


@functools.cache
def load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
