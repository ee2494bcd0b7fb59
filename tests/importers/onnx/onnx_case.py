"""One ONNX node, run by tensorkiln and by onnxruntime, compared with the tolerance table.

    check("Conv", [x, Const(w), Const(b)], opset=11, strides=[2, 1], pads=[1, 0, 2, 1])

Inputs are given in node order: a numpy array is a graph input (fed at run time), `Const(array)` is an
initializer (known at build time), None is an omitted optional input. Attributes are keyword arguments.
The reference is onnxruntime; for a node onnxruntime does not run, or runs against the ONNX spec, it is
`reference="onnx"` (onnx.reference.ReferenceEvaluator) or a function written in the test. A mismatch fails
with the op, the opset, the attributes, the input shapes and the worst element, so a failure can be read
without a debugger. `check_reduced` runs a node in float16 or bfloat16 against onnxruntime in float32.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tolerances import Tolerance, tolerance_for


@dataclasses.dataclass(frozen=True)
class Const:
    """An input known at build time: an initializer of the model."""
    value: np.ndarray


def rand(*shape, dtype=np.float32, low=-2.0, high=2.0, seed=0) -> np.ndarray:
    """Random data (never zeros); integers are drawn from [low, high)."""
    rng = np.random.default_rng(seed + 7919 * len(shape) + sum(shape))
    if np.dtype(dtype).kind in "iu":
        return rng.integers(int(low), int(high), size=shape).astype(dtype)
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) < 0.5
    return rng.uniform(low, high, size=shape).astype(dtype)


def positive(*shape, dtype=np.float32, seed=0) -> np.ndarray:
    return rand(*shape, dtype=dtype, low=0.1, high=3.0, seed=seed)


def make_model(op_type: str, inputs: Sequence, attrs: dict, opset: int, n_outputs: int = 1,
               domain: str = "") -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A model holding one node; returns it with the feed of its run-time inputs."""
    names, graph_inputs, initializers, feed = [], [], [], {}
    for index, value in enumerate(inputs):
        if value is None:
            names.append("")
            continue
        name = f"in{index}"
        names.append(name)
        if isinstance(value, Const):
            initializers.append(numpy_helper.from_array(np.asarray(value.value), name))
        else:
            array = np.asarray(value)
            feed[name] = array
            elem = helper.np_dtype_to_tensor_dtype(array.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, array.shape))
    outputs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outputs, domain=domain, **attrs)
    graph = helper.make_graph([node], f"{op_type.lower()}_case", graph_inputs,
                              [onnx.ValueInfoProto(name=o) for o in outputs], initializers)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 10)  # onnxruntime reads IR versions up to 10
    return model, feed


def run_onnxruntime(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the op itself, not a fusion
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def run_tensorkiln(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Build, save to bytes and load again (every layer's attributes go through the engine file), run."""
    network = parse_onnx(model)
    engine = tk.Runtime().deserialize(tk.Builder(tk.BuilderConfig(opt_level=0)).build(network).serialize())
    produced = engine.create_execution_context().execute(feed)
    return [np.asarray(produced[o.name]) for o in model.graph.output]


def check(op_type: str, inputs: Sequence, *, opset: int = 17, n_outputs: int = 1, domain: str = "",
          reference: Callable[..., Sequence[np.ndarray]] | str | None = None, tolerance: Tolerance | None = None,
          **attrs) -> list[np.ndarray]:
    """Run one node with tensorkiln and the reference, and assert that every output agrees."""
    __tracebackhide__ = True
    model, feed = make_model(op_type, inputs, attrs, opset, n_outputs, domain)
    if reference is None:
        expected = run_onnxruntime(model, feed)
    elif reference == "onnx":  # onnx's own reference implementation, where onnxruntime departs from the spec
        from onnx.reference import ReferenceEvaluator

        expected = ReferenceEvaluator(model).run(None, feed)
    else:
        expected = list(reference(*[None if v is None else np.asarray(getattr(v, "value", v)) for v in inputs]))
    actual = run_tensorkiln(model, feed)
    where = describe(op_type, opset, attrs, inputs)
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert_close(got, np.asarray(want), f"{where}, output {index}", tolerance)
    return actual


def check_reduced(op_type: str, inputs: Sequence, dtype: str, *, opset: int = 17, n_outputs: int = 1,
                  keep: Sequence[int] = (), **attrs) -> None:
    """Run one node in float16 or bfloat16 (float32 inputs, but those at the indices in `keep`, are rounded to
    `dtype`) and compare it with onnxruntime running the node in float32 on the rounded inputs, within
    `dtype`'s tolerance."""
    __tracebackhide__ = True
    import ml_dtypes
    import torch

    low = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]

    def lowered(value):
        array = np.asarray(getattr(value, "value", value))
        return array.astype(low) if array.dtype == np.float32 else array

    def rounded(index, value):
        if value is None or index in keep:
            return value
        array = lowered(value)
        array = array.astype(np.float32) if array.dtype == low else array
        return Const(array) if isinstance(value, Const) else array

    reference_model, reference_feed = make_model(op_type, [rounded(i, v) for i, v in enumerate(inputs)], attrs,
                                                 opset, n_outputs)
    expected = run_onnxruntime(reference_model, reference_feed)
    reduced = [v if v is None or i in keep else Const(lowered(v)) if isinstance(v, Const) else lowered(v)
               for i, v in enumerate(inputs)]
    model, feed = make_model(op_type, reduced, attrs, opset, n_outputs)
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    torch_feed = {k: torch.from_numpy(v.astype(np.float32)).to(torch_dtype) if v.dtype == low else torch.from_numpy(v)
                  for k, v in feed.items()}
    engine = tk.Runtime().deserialize(tk.Builder(tk.BuilderConfig(opt_level=0)).build(parse_onnx(model)).serialize())
    produced = engine.create_execution_context().execute(torch_feed)
    where = describe(op_type, opset, attrs, inputs) + f" in {dtype}"
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    for index, (output, want) in enumerate(zip(model.graph.output, expected)):
        got, elem = produced[output.name], inferred[index].type.tensor_type.elem_type
        got_array = got.float().numpy() if got.dtype in (torch.float16, torch.bfloat16) else got.numpy()
        if elem != helper.np_dtype_to_tensor_dtype(np.dtype(low)):  # not a reduced-precision output (Cast, ArgMax)
            assert_close(got_array, np.asarray(want), f"{where}, output {index}")
            continue
        if got.dtype != torch_dtype:
            raise AssertionError(f"{where}, output {index}: dtype {got.dtype}, expected {torch_dtype}")
        assert_close(got_array, np.asarray(want).astype(np.float32), f"{where}, output {index}", tolerance_for(dtype))


def describe(op_type: str, opset: int, attrs: dict, inputs: Sequence) -> str:
    shapes = ", ".join("-" if v is None else
                       f"{'const ' if isinstance(v, Const) else ''}{np.asarray(getattr(v, 'value', v)).dtype}"
                       f"{list(np.shape(getattr(v, 'value', v)))}" for v in inputs)
    attributes = ", ".join(f"{k}={v}" for k, v in attrs.items())
    return f"{op_type} (opset {opset}) on ({shapes})" + (f" with {attributes}" if attributes else "")


def assert_close(actual: np.ndarray, expected: np.ndarray, where: str, tolerance: Tolerance | None = None) -> None:
    __tracebackhide__ = True
    if actual.shape != expected.shape:
        raise AssertionError(f"{where}: shape {actual.shape}, expected {expected.shape}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{where}: dtype {actual.dtype}, expected {expected.dtype}")
    tol = tolerance or tolerance_for(expected.dtype)
    if tol.exact:
        bad = actual != expected
    else:
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(e)
        same_inf = np.isinf(a) & (a == e)
        bad = ~(both_nan | same_inf) & ~(np.abs(a - e) <= tol.atol + tol.rtol * np.abs(e))
    if not bad.any():
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    message = (f"{where}: {int(bad.sum())} of {bad.size} elements differ (rtol={tol.rtol}, atol={tol.atol}); "
               f"first at {first}: got {actual[first]!r}, expected {expected[first]!r}")
    if expected.dtype.kind == "f":
        error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        error = np.where(bad, np.nan_to_num(error, nan=np.inf), 0)  # a NaN against a number is the worst
        worst = tuple(int(i) for i in np.unravel_index(np.nanargmax(error), error.shape))
        message += f"; worst at {worst}: got {actual[worst]!r}, expected {expected[worst]!r}"
    raise AssertionError(message)
