"""Shape, dtype and value inference for one layer.

When every input's value is known, the layer is evaluated on the CPU and its outputs get values too
(this is how shape computations of exported models become constants). Otherwise the layer kind's closed-form rule
gives the output shapes and dtypes where it is sure (ir/shape_rules.py), and else the reference kernel runs on
PyTorch's meta device, which computes them without touching data. Every output
must fit in the memory budget (tensorkiln.limits); a constant layer's outputs are checked on the meta device
before it is evaluated (a 200-byte model can ask for a 10^10-element Expand of a constant).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import contextvars

import numpy as np
import torch

from ..errors import ShapeError
from ..limits import ResourceLimits, active_limits
from .dtypes import DataType
from .graph import Tensor
from .ops import OpAttrs
from .shape_rules import closed_form


class InferredOutput(NamedTuple):
    dtype: DataType
    shape: tuple[int, ...]
    value: np.ndarray | None


DYNAMIC = -1  # a dimension whose size is known only at run time (outputs of NonZero, NonMaxSuppression, ...)
# The size a data-dependent kernel reports on the meta device; inference runs twice with two different
# sizes, and the output dims that differ between the runs are the dynamic ones.
_DYNAMIC_SIZE: contextvars.ContextVar[int] = contextvars.ContextVar("dynamic_size", default=11)
_PROBE_SIZES = (11, 13)


def dynamic_size() -> int:
    """For data-dependent kernels on the meta device: the size to give a data-dependent dimension."""
    return _DYNAMIC_SIZE.get()


def _infer_on_meta(fn, op, inputs) -> list[InferredOutput]:
    runs = []
    for size in _PROBE_SIZES if getattr(op, "DATA_DEPENDENT", False) or _any_dynamic(inputs) else _PROBE_SIZES[:1]:
        token = _DYNAMIC_SIZE.set(size)
        try:
            meta = [None if t is None else torch.empty(tuple(size if d == DYNAMIC else d for d in t.shape),
                                                        dtype=t.dtype.torch, device="meta") for t in inputs]
            with torch.inference_mode():
                runs.append(fn(op, meta))
        finally:
            _DYNAMIC_SIZE.reset(token)
    results = []
    for index, output in enumerate(runs[0]):
        shapes = [tuple(run[index].shape) for run in runs]
        shape = tuple(d if all(s[i] == d for s in shapes) else DYNAMIC for i, d in enumerate(shapes[0]))
        results.append(InferredOutput(DataType.from_torch(output.dtype), shape, None))
    return results


def _infer_shapes(fn, op, inputs) -> list[InferredOutput]:
    """By the layer kind's closed-form rule where it is sure, else on the meta device."""
    known = closed_form(op, inputs)
    if known is None:
        return _infer_on_meta(fn, op, inputs)
    return [InferredOutput(dtype, shape, None) for dtype, shape in known]


def infer_on_meta(op: OpAttrs, inputs) -> list[InferredOutput]:
    """Output dtypes and shapes of a layer from its inputs' (anything with `.dtype`, a DataType, and `.shape`, -1 for
    a dynamic dim), by its reference kernel on the meta device; the kernel's own exceptions propagate."""
    from ..kernels.registry import get_kernel

    return _infer_on_meta(get_kernel(op.KIND, "cpu"), op, inputs)


def _any_dynamic(inputs) -> bool:
    return any(t is not None and DYNAMIC in t.shape for t in inputs)


def to_torch(array: np.ndarray) -> torch.Tensor:
    # np.ascontiguousarray would turn 0-d arrays into 1-d ones; torch also wants writable memory
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = array.copy(order="C")
    return torch.from_numpy(array)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


def infer_layer(op: OpAttrs, inputs: Sequence[Tensor | None], layer_name: str,
                limits: ResourceLimits | None = None) -> list[InferredOutput]:
    """Output dtypes, shapes and (where every input is a constant) values of a layer. Every output is checked
    against `limits` (default: those of the build in progress) before it is computed: a constant layer is evaluated
    only once its outputs' sizes, found on the meta device, fit."""
    from ..kernels.registry import get_kernel

    fn = get_kernel(op.KIND, "cpu")
    limits = limits or active_limits()
    present = [t for t in inputs if t is not None]
    all_constant = bool(present) and all(t.is_constant for t in present)
    try:
        if all_constant:
            _check_outputs(_probe_on_meta(fn, op, inputs), op, layer_name, limits)
            with torch.inference_mode():
                outputs = fn(op, [None if t is None else to_torch(t.value) for t in inputs])
            results = [InferredOutput(DataType.from_torch(o.dtype), tuple(o.shape), to_numpy(o)) for o in outputs]
        else:
            results = _infer_shapes(fn, op, inputs)
    except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError) as error:  # ZeroDivisionError: a
        # kernel taking an axis modulo a 0-d input's rank
        shapes = ", ".join("None" if t is None else t.describe() for t in inputs)
        raise ShapeError(f"layer {layer_name!r} ({op.KIND}) cannot take inputs ({shapes}): {error}") from None
    _check_outputs(results, op, layer_name, limits)  # activations; and values whose size only the data decided
    return results


def _probe_on_meta(fn, op, inputs) -> list[InferredOutput]:
    """The outputs' shapes of a constant layer, without computing them; none where the meta device cannot tell
    (a kernel that reads its inputs' values): the evaluation then reports what is wrong, and its result is checked."""
    try:
        return _infer_shapes(fn, op, inputs)
    except Exception:  # noqa: BLE001 - only a probe: any failure here is the evaluation's to report
        return []


def _check_outputs(outputs: Sequence[InferredOutput], op: OpAttrs, layer_name: str, limits: ResourceLimits) -> None:
    for index, output in enumerate(outputs):
        limits.check_tensor(f"output {index} of layer {layer_name!r} ({op.KIND})", output.shape, output.dtype)
