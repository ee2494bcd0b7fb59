"""The independent reference of the ONNX target: a mutated model that tensorkiln built and ran is run again by
onnxruntime on the same inputs, and the outputs must agree (NaN where onnxruntime has NaN, and within a loose
tolerance elsewhere). A model onnxruntime refuses has no reference and is not compared: the mutations make many
models that only one of the two accepts, and refusing one is not a wrong result.

Only tame models are compared (is_tame: no infinite or huge weights; NaN weights are fine), and the tolerance
is loose (1e-3, relative to the output's largest finite value): a mutated model that multiplies by 1e30 gives
results that depend on the order of summation, and only a difference that is not rounding is a finding.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .case import OutputMismatch

RTOL = 1e-3
ATOL = 1e-3  # times the largest finite magnitude of the reference output (at least 1)


# onnxruntime's max/min windows and reductions keep a NaN or drop it by its position (MaxPool keeps it only when it
# is last in the window, ReduceMax only when it is first): no engine can match that, and tensorkiln computes the
# definition (NaN wherever a NaN is in the window, as numpy and PyTorch do; tests/test_nan_inf.py). Behind such an
# op, tensorkiln may have NaN where onnxruntime has a number, never the reverse.
ORDER_DEPENDENT_NAN_OPS = frozenset({"MaxPool", "GlobalMaxPool", "MaxRoiPool", "ReduceMax", "ReduceMin", "Max",
                                     "Min"})

TAME_MAGNITUDE = 1e4  # float initializers beyond this (or infinite) make results depend on summation order


def is_tame(model_path: str) -> bool:
    """Whether the model's float initializers are finite and moderate (NaN is allowed: its propagation does not
    depend on the order of operations). With 1e30 in a weight, logits agree to one unit in the last place and a
    softmax of them is one-hot in one runtime and uniform in the other: neither is wrong, so such a model has
    no reference."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(model_path, load_external_data=False)
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                continue
            values = numpy_helper.to_array(tensor)
            if values.dtype.kind == "f" and values.size:
                finite = values[~np.isnan(values)]
                if finite.size and not (np.isfinite(finite).all() and np.abs(finite).max() <= TAME_MAGNITUDE):
                    return False
    except Exception:  # noqa: BLE001 - a model onnx cannot read back has no reference either
        return False
    return True


def drops_nan_by_position(model_path: str) -> bool:
    """Whether the model holds an op whose NaN propagation in onnxruntime depends on the element order."""
    import onnx

    try:
        model = onnx.load(model_path, load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: reference_outputs has no reference for it either
        return False
    graphs, found = [model.graph], False
    while graphs and not found:
        graph = graphs.pop()
        for node in graph.node:
            found = found or node.op_type in ORDER_DEPENDENT_NAN_OPS
            graphs.extend(attribute.g for attribute in node.attribute if attribute.HasField("g"))
    return found


def reference_outputs(model: str, feed: Mapping[str, Any], names: list[str]) -> dict[str, np.ndarray] | None:
    """onnxruntime's outputs `names` of the model at path `model` on `feed`, or None where onnxruntime cannot
    run the model or the model is not tame (is_tame)."""
    import onnxruntime

    if not is_tame(model):
        return None
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


def compare(actual: Mapping[str, Any], expected: Mapping[str, np.ndarray], label: str,
            extra_nan_allowed: bool = False) -> None:
    """Raise OutputMismatch where an output differs from the reference (shape, NaN positions, values).
    With `extra_nan_allowed` (drops_nan_by_position), tensorkiln may have NaN where the reference has a number."""
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
        if extra_nan_allowed:
            nan_differs &= np.isnan(reference)
            mine = np.where(np.isnan(mine), reference, mine)
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
