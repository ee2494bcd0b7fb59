"""The one tolerance table of the numeric tests: how far an output may be from its reference, per dtype.

An element passes when |actual - expected| <= atol + rtol * |expected| (numpy's assert_allclose rule).
Integer and boolean outputs must match exactly. The floating-point entries are sized for one op (or a few
fused ones) on inputs of magnitude about 1: a handful of units in the last place of the dtype, plus what a
different summation order costs over a few hundred terms. A test that needs more must say why where it
asks for it; never widen an entry here to make one test pass.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    @property
    def exact(self) -> bool:
        return self.rtol == 0 and self.atol == 0


EXACT = Tolerance(0.0, 0.0)

# dtype name -> tolerance. fp32: ~100 ulp relative (2^-23 = 1.2e-7); fp16: 2^-10 = 9.8e-4 per rounding;
# bf16: 2^-7 = 7.8e-3 per rounding; float64 results are usually computed in float64 on both sides.
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
    "float32": Tolerance(rtol=1e-5, atol=1e-5),
    "float16": Tolerance(rtol=2e-3, atol=2e-3),
    "bfloat16": Tolerance(rtol=1.6e-2, atol=1.6e-2),
}


def tolerance_for(dtype) -> Tolerance:
    """The tolerance of outputs of `dtype` (a numpy dtype, a torch dtype or a dtype name)."""
    name = str(dtype).replace("torch.", "")
    if name in TOLERANCES:
        return TOLERANCES[name]
    if np.dtype(name).kind in "biu":
        return EXACT
    raise KeyError(f"no tolerance for dtype {name}; add one to tests/tolerances.py with a comment saying why")
