"""The independent reference of the ONNX target: a mutated model that tensorkiln built and ran is run again by
onnxruntime on the same inputs, and the outputs must agree (NaN where onnxruntime has NaN, and within a loose
tolerance elsewhere). A model onnxruntime refuses has no reference and is not compared: the mutations make many
models that only one of the two accepts, and refusing one is not a wrong result.

The tolerance is loose on purpose (1e-3, relative to the output's largest finite value): a mutated model
multiplies by 1e30 or divides by 1e-45, and only a difference that is not rounding is a finding.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .case import OutputMismatch

RTOL = 1e-3
ATOL = 1e-3  # times the largest finite magnitude of the reference output (at least 1)


def reference_outputs(model: bytes, feed: Mapping[str, Any], names: list[str]) -> dict[str, np.ndarray] | None:
    """onnxruntime's outputs `names` of `model` on `feed`, or None where onnxruntime cannot run the model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 4  # the fuzzer's models are odd on purpose: no warnings per case
    # onnxruntime's own fusions are not the ONNX semantics on odd values: with a GELU whose 0.5 is +inf, the
    # fused graph returns +-inf where the unfused one (and onnx's reference evaluator) returns NaN
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if not set(names) <= outputs or not inputs <= set(feed):
            return None
        values = session.run(names, {name: np.asarray(feed[name]) for name in inputs})
    except Exception:  # noqa: BLE001 - onnxruntime refusing or failing on a mutated model: no reference
        return None
    return dict(zip(names, values))


def compare(actual: Mapping[str, Any], expected: Mapping[str, np.ndarray], label: str) -> None:
    """Raise OutputMismatch where an output differs from the reference (shape, NaN positions, values)."""
    for name, reference in expected.items():
        value = actual[name]
        mine = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        reference = np.asarray(reference)
        if mine.shape != reference.shape:
            raise OutputMismatch(label, f"output {name!r} has shape {mine.shape}, onnxruntime {reference.shape}")
        if reference.dtype.kind not in "fc" or mine.dtype.kind not in "fc":
            if not np.array_equal(mine.astype(reference.dtype, copy=False), reference):
                raise OutputMismatch(label, f"output {name!r} differs from onnxruntime's in "
                                            f"{int(np.sum(mine != reference))} of {reference.size} elements")
            continue
        mine, reference = mine.astype(np.float64), reference.astype(np.float64)
        nan_differs = np.isnan(mine) != np.isnan(reference)
        if nan_differs.any():
            raise OutputMismatch(label, f"output {name!r}: NaN in {int(np.isnan(mine).sum())} elements, onnxruntime "
                                        f"{int(np.isnan(reference).sum())} (NaN must propagate as in onnxruntime)")
        finite = reference[np.isfinite(reference)]
        scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        with np.errstate(all="ignore"):
            close = np.isclose(mine, reference, rtol=RTOL, atol=ATOL * scale, equal_nan=True)
        if not close.all():
            worst = int(np.argmax(~close.reshape(-1)))
            raise OutputMismatch(label, f"output {name!r} differs from onnxruntime's in {int((~close).sum())} of "
                                        f"{close.size} elements (e.g. {mine.reshape(-1)[worst]!r} vs "
                                        f"{reference.reshape(-1)[worst]!r})")
