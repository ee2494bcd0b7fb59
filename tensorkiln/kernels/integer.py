"""Which tactics are integer kernels: those of the layers an INT8 build quantized that read an INT8 (or quantize a
float) input and honour int8_output_scale (ir/ops/optimized.py). The builder links such layers (plan/integer_links.py)
on every target; the kernels register here (kernels/cuda/int8.py, kernels/cpu/int8_onednn.py)."""
from __future__ import annotations

from .registry import kernel

INTEGER_IMPLS: set[tuple[str, str]] = set()  # (target, implementation name) of every integer kernel


def integer_kernel(op_class, target: str, impl: str, supports, fn, **kwargs) -> None:
    """Register `fn` as integer kernel `impl` of `op_class` on `target`."""
    INTEGER_IMPLS.add((target, impl))
    kernel(op_class, target=target, impl=impl, supports=supports, **kwargs)(fn)


def is_integer_tactic(tactic: str) -> bool:
    """Whether a tactic id (`<target>.<kind>.<impl>`) names an integer kernel."""
    target, _, impl = (tactic.split(".", 2) + ["", ""])[:3]
    return (target, impl) in INTEGER_IMPLS
