"""Accuracy of a tensorkiln engine against onnxruntime, output by output and layer by layer (Polygraphy's
`polygraphy run model.onnx --trt --onnxrt`, with `--validate` and `--mark all`).

    result = compare_with_onnxruntime("model.onnx", layerwise=True)   # builds an FP32 CPU engine
    result.passed, result.outputs, result.first_failing_layer

Both runtimes get the same inputs (given, or seeded random values that are never all zero). Layer-wise, the engine
runs step by step (ExecutionContext.run_each_step) and each step's output that still carries its model name (the
importer keeps ONNX tensor names; a fused step's output is the last fused layer's tensor, see Step.fused_from) is
compared with that tensor in onnxruntime, which is asked for it by listing it as an extra graph output of a copy
of the model. Tensors inside a fusion exist in the model only, and are not compared. The engine computes from its
own activations, so an error shows at the step that makes it and at every step after: the first layer past the
tolerance is the one to look at.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ModelFormatError, TensorkilnError
from .tensor_diff import DEFAULT_TOLERANCES, TensorComparison, Tolerance, compare_arrays

# Random integer inputs come from [0, RANDOM_INT_HIGH): valid indices into any axis of that size, never all zero
# (the rule of `kiln run`'s random inputs).
RANDOM_INT_HIGH = 4
_PROTOBUF_LIMIT = 2 ** 31 - 1  # bytes of one serialized protobuf message; larger models go through a file


class CompareError(TensorkilnError):
    """The engine and the model cannot be compared (an input one of them lacks, onnxruntime refusing the model)."""


@dataclasses.dataclass(frozen=True)
class ComparisonResult:
    model: str
    precision: str  # the engine's
    tolerance: Tolerance
    outputs: tuple[TensorComparison, ...]  # in the engine's output order
    layers: tuple[TensorComparison, ...] = ()  # layer-wise: the named step outputs, in execution order
    uncompared_steps: int = 0  # layer-wise: steps whose outputs the model does not name (internal to a fusion)

    @property
    def passed(self) -> bool:
        """Every output within the tolerance (layer-wise differences alone do not fail a comparison)."""
        return all(output.passed for output in self.outputs)

    @property
    def failed_outputs(self) -> tuple[TensorComparison, ...]:
        return tuple(output for output in self.outputs if not output.passed)

    @property
    def first_failing_layer(self) -> TensorComparison | None:
        """The first step, in execution order, whose output is past the tolerance (layer-wise only)."""
        return next((layer for layer in self.layers if not layer.passed), None)


def compare_with_onnxruntime(model, engine=None, *, inputs: Mapping[str, Any] | None = None, config=None,
                             shapes: Mapping[str, Sequence[int]] | None = None, tolerance: Tolerance | None = None,
                             layerwise: bool = False, seed: int = 0, limits=None) -> ComparisonResult:
    """Run `model` (an ONNX path or ModelProto) on onnxruntime's CPU provider and on `engine` (an Engine, an engine
    file, or None: built here from the model with `config`, a BuilderConfig, and `shapes`) on the same `inputs`
    (default: random with `seed`), and compare every output (with `layerwise`, every named intermediate too).
    `tolerance` defaults to DEFAULT_TOLERANCES of the engine's precision."""
    proto, name = load_model(model)
    if engine is None:
        engine = build_engine(proto, config, shapes, limits)
    elif isinstance(engine, (str, Path)):
        engine = _load_engine(engine)
    tolerance = tolerance or DEFAULT_TOLERANCES.get(engine.plan.precision, DEFAULT_TOLERANCES["fp32"])
    feed = dict(inputs) if inputs is not None else random_inputs(engine.inputs, seed)
    wanted = named_step_outputs(proto, engine.plan) if layerwise else set()
    reference = onnxruntime_outputs(proto, feed, sorted(wanted))
    layers: list[TensorComparison] = []
    context = engine.create_execution_context(cuda_graph=False, limits=limits)
    if layerwise:
        steps = engine.plan.steps

        def compare_step(index: int, launch, args):
            results = launch()
            step = steps[index]
            for tensor, value in zip(step.outputs, results):
                # a name the importer kept for a tensor of another shape (a layout it chose) is not comparable
                if tensor in wanted and tuple(value.shape) == reference[tensor].shape:
                    layers.append(compare_arrays(tensor, value, reference[tensor], tolerance, layer=step.name,
                                                 kind=step.kind, tactic=step.tactic, fused_from=step.fused_from))
            return results

        outputs = context.run_each_step(feed, compare_step)
    else:
        outputs = context.execute(feed)
    compared_steps = {layer.layer for layer in layers}  # the others' outputs are internal to fusions
    return ComparisonResult(
        name, engine.plan.precision, tolerance,
        tuple(_compare_output(spec.name, outputs, reference, tolerance) for spec in engine.outputs),
        tuple(layers), sum(step.name not in compared_steps for step in engine.plan.steps) if layerwise else 0)


def _compare_output(name: str, outputs: Mapping[str, Any], reference: Mapping[str, np.ndarray],
                    tolerance: Tolerance) -> TensorComparison:
    if name not in reference:
        raise CompareError(f"engine output {name!r} is not an output of the model; compare the engine with the "
                           "model it was built from")
    return compare_arrays(name, outputs[name], reference[name], tolerance)


def __getattr__(name: str):
    """tools.compare.find_precision_layers is tools.precision's (imported on use: precision imports this module)."""
    if name == "find_precision_layers":
        from .precision import find_precision_layers

        return find_precision_layers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- the model, the engine, the inputs ------------------------------------------------------------
def load_model(model):
    """(ModelProto, a name to show) of an ONNX path or ModelProto; external data is loaded with it."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "model"
    path = Path(model)
    if not path.is_file():
        raise ModelFormatError(f"model file {str(path)!r} does not exist")
    try:
        return onnx.load(str(path)), str(path)
    except Exception as error:  # onnx raises protobuf's DecodeError, or OSError for missing external data
        raise ModelFormatError(f"cannot read {str(path)!r} as an ONNX model: {error}") from None


def build_engine(proto, config=None, shapes: Mapping[str, Sequence[int]] | None = None, limits=None):
    """An engine of the ONNX model `proto` built with `config` (default: FP32 on the CPU)."""
    from ..builder import Builder
    from ..importers.onnx import parse_onnx

    network = parse_onnx(proto, input_shapes=dict(shapes) if shapes else None, limits=limits)
    return Builder(config).build(network)


def _load_engine(path):
    from ..runtime import Runtime

    return Runtime().load(path)


def random_inputs(specs, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random values for the engine inputs `specs`, never all zero: standard normal floats, integers from
    [0, RANDOM_INT_HIGH), random booleans."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        if spec.dtype.value == "bfloat16":
            raise CompareError(f"input {spec.name!r} is bfloat16, which onnxruntime's Python API cannot take; "
                               "compare a model with float32 inputs")
        if spec.dtype.is_floating:
            value = rng.standard_normal(spec.shape)
        elif spec.dtype.value == "bool":
            value = rng.random(spec.shape) < 0.5
        else:
            value = rng.integers(0, RANDOM_INT_HIGH, spec.shape)
        feed[spec.name] = np.ascontiguousarray(value, dtype=spec.dtype.numpy)
    return feed


def named_step_outputs(proto, plan) -> set[str]:
    """The engine's step outputs that are tensors of the model's main graph (by name)."""
    model_tensors = {name for node in proto.graph.node for name in node.output if name}
    return {name for step in plan.steps for name in step.outputs if name in model_tensors}


# ---- onnxruntime -----------------------------------------------------------------------------
def onnxruntime_outputs(proto, feed: Mapping[str, Any], extra_outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """{name: array} of the model's outputs and of `extra_outputs` (intermediate tensors), by onnxruntime's CPU
    provider on `feed`."""
    if extra_outputs:
        proto = _with_outputs(proto, extra_outputs)
    with tempfile.TemporaryDirectory(prefix="kiln-compare-") as folder:
        session = _session(proto, Path(folder))
        ort_feed = {}
        for spec in session.get_inputs():
            if spec.name not in feed:
                raise CompareError(f"the model's input {spec.name!r} is not an input of the engine (fixed at build "
                                   "time with --input-values?); compare an engine built without fixed inputs")
            ort_feed[spec.name] = _as_onnxruntime_input(spec, feed[spec.name])
        names = [output.name for output in session.get_outputs()]
        try:
            values = session.run(names, ort_feed)
        except Exception as error:  # onnxruntime's own exception classes
            raise CompareError(f"onnxruntime could not run the model: {' '.join(str(error).split())}") from None
    return {name: np.asarray(value) for name, value in zip(names, values)}


def _with_outputs(proto, names: Sequence[str]):
    """A copy of `proto` whose graph also outputs `names` (value infos without a type: onnxruntime infers it)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    present = {output.name for output in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    return copy


def _session(proto, folder: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: not a warning per initializer listed as a graph input
    model: Any = proto
    if proto.ByteSize() < _PROTOBUF_LIMIT:
        model = proto.SerializeToString()
    else:  # one protobuf message cannot hold it: the weights go to a file beside the model
        import onnx

        model = str(folder / "model.onnx")
        onnx.save_model(proto, model, save_as_external_data=True, location="weights.bin")
    try:
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise CompareError(f"onnxruntime cannot load the model: {' '.join(str(error).split())}") from None


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
              "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_}


def _as_onnxruntime_input(spec, value) -> np.ndarray:
    """The engine's input value as onnxruntime takes it: numpy, of the model's declared element type."""
    if not isinstance(value, np.ndarray):
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    dtype = _ORT_TYPES.get(spec.type)
    if dtype is None:
        raise CompareError(f"the model's input {spec.name!r} has type {spec.type}, which compare cannot feed")
    return np.ascontiguousarray(value, dtype=dtype)
