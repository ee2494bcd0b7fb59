"""Which layers of a reduced-precision engine must compute in FP32 for its outputs to pass (Polygraphy's
`debug precision`), and the layer-precision file that `kiln build --layer-precisions @FILE` reads.

The search builds the engine again with sets of layers kept in FP32 (BuilderConfig.layer_precisions; in an INT8
build a layer so kept is not quantized) and compares each engine's outputs with onnxruntime's on the same inputs.
It assumes that keeping more layers in FP32 never makes the outputs worse. Then, in execution order:

1. a binary search finds the shortest prefix of the candidate layers whose keeping makes the outputs pass; its
   last layer is needed (without it the prefix before fails), so it is kept for good;
2. step 1 repeats on the candidates before that layer, with the kept ones added, until the kept set alone passes;
3. each kept layer is tried without, in case a later choice made it unnecessary.

So one inaccurate layer costs about log2(layers) builds, and k of them about k * log2(layers).

The file is JSON: {"format": "tensorkiln-layer-precisions", "version": 1, "layers": {"STEP NAME": "fp32", ...}}
(any other keys, such as the model and the tolerance it was found for, are notes). The names are the engine's step
names, as `kiln inspect ENGINE --layers` lists them (after fusion: `Conv:185.fused`); precisions are fp32, tf32,
fp16 and bf16. On the command line the same overrides may be written inline: `NAME:fp32,NAME:fp32`.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import TensorkilnError
from .compare import (CompareError, build_engine, load_model, onnxruntime_outputs, random_inputs)
from .tensor_diff import DEFAULT_TOLERANCES, Tolerance, compare_arrays

FILE_FORMAT = "tensorkiln-layer-precisions"
FILE_VERSION = 1
LAYER_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")  # what a layer may be set to (Step precisions)


class LayerPrecisionError(TensorkilnError):
    """A layer-precision file or --layer-precisions value that cannot be read."""


@dataclasses.dataclass(frozen=True)
class PrecisionSearch:
    """What find_precision_layers found."""
    layers: tuple[str, ...]  # to keep in FP32, in execution order (empty: the engine passes as built)
    precision: str  # the build's precision
    tolerance: Tolerance
    builds: int  # engines built and compared, the first (nothing kept) included
    candidates: int  # layers the search could keep

    @property
    def needed(self) -> bool:
        return bool(self.layers)

    def overrides(self) -> dict[str, str]:
        return {name: "fp32" for name in self.layers}


def find_precision_layers(model, config, *, engine=None, inputs: Mapping[str, Any] | None = None,
                          shapes: Mapping[str, Sequence[int]] | None = None, tolerance: Tolerance | None = None,
                          seed: int = 0, limits=None, on_build: Callable[[int, bool], None] | None = None
                          ) -> PrecisionSearch:
    """The layers of `model` (an ONNX path or ModelProto) built with `config` (a reduced-precision BuilderConfig)
    that must stay in FP32 for every output to be within `tolerance` of onnxruntime on `inputs` (default: random
    with `seed`). `engine`: the engine `config` built from the model already, if there is one (saves a build; an
    INT8 one built with with_reusable_calibration(config), so that the search reuses its scales).
    `on_build(layers kept, passed)` is called after each trial build. Raises CompareError when even every candidate
    layer in FP32 fails (the error is then not the precision's: try `kiln compare --layerwise`)."""
    from ..quant.precision import Precision

    if config is None or config.precision in (Precision.FP32, Precision.TF32):
        raise CompareError("the precision search needs a reduced-precision build (FP16, BF16 or INT8): the "
                           "layers it keeps in FP32 are taken out of that precision")
    proto, _ = load_model(model)
    with tempfile.TemporaryDirectory(prefix="kiln-precision-") as folder:
        if config.timing_cache is None:  # the trial builds time each layer's kernels once, not once per build
            config = dataclasses.replace(config, timing_cache=Path(folder) / "timing.cache")
        return _find(proto, with_reusable_calibration(config), engine, inputs, shapes, tolerance, seed, limits,
                     on_build)


def _find(proto, config, engine, inputs, shapes, tolerance, seed, limits, on_build) -> PrecisionSearch:
    from ..quant.precision import Precision

    baseline = engine if engine is not None else build_engine(proto, config, shapes, limits)
    tolerance = tolerance or DEFAULT_TOLERANCES[config.precision.value]
    feed = dict(inputs) if inputs is not None else random_inputs(baseline.inputs, seed)
    reference = onnxruntime_outputs(proto, feed)
    trials: dict[frozenset[str], bool] = {}

    def passes(kept: Sequence[str], engine=None) -> bool:
        key = frozenset(kept)
        if key not in trials:
            if engine is None:
                overrides = tuple((name, Precision.FP32) for name in kept)
                engine = build_engine(proto, dataclasses.replace(
                    config, layer_precisions=config.layer_precisions + overrides), shapes, limits)
            outputs = engine.create_execution_context(limits=limits).execute(feed)
            trials[key] = all(compare_arrays(spec.name, outputs[spec.name], reference[spec.name], tolerance).passed
                              for spec in engine.outputs)
            if on_build is not None:
                on_build(len(kept), trials[key])
        return trials[key]

    candidates = _candidates(baseline.plan)
    found: tuple[str, ...] = ()
    if not passes((), baseline):
        if not passes(candidates):
            raise CompareError(f"the outputs are past the tolerance ({tolerance}) even with all {len(candidates)} "
                               f"{config.precision.value} layers in FP32: the error is not the precision's; "
                               "find the layer with kiln compare --layerwise")
        found = _search(candidates, passes)
    order = {name: index for index, name in enumerate(candidates)}
    return PrecisionSearch(tuple(sorted(found, key=order.__getitem__)), config.precision.value, tolerance,
                           len(trials), len(candidates))


def _search(candidates: Sequence[str], passes: Callable[[Sequence[str]], bool]) -> tuple[str, ...]:
    """A small set of `candidates` whose keeping passes; passes(candidates) is known to hold (see the module)."""
    kept: list[str] = []
    remaining = list(candidates)
    while not passes(kept):  # invariant: passes(kept + remaining)
        low, high = 1, len(remaining)  # the shortest prefix that passes with `kept` is in [low, high]
        while low < high:
            middle = (low + high) // 2
            if passes(kept + remaining[:middle]):
                high = middle
            else:
                low = middle + 1
        kept.append(remaining[low - 1])
        remaining = remaining[:low - 1]
    for name in list(kept):  # a layer kept early may be unneeded once later ones are kept
        if len(kept) > 1 and passes([other for other in kept if other != name]):
            kept.remove(name)
    return tuple(kept)


def _candidates(plan) -> list[str]:
    """The steps the search may keep in FP32: in an INT8 engine the kinds quantize_int8 quantizes (the quantizing
    steps it adds exist only while their reader is quantized), else those computing in the engine's precision with
    a floating output."""
    if plan.precision == "int8":
        kinds = _int8_kinds()
        return [step.name for step in plan.steps if not step.precision and step.kind in kinds]
    floating = {spec.name for spec in plan.tensors if spec.dtype.is_floating}
    return [step.name for step in plan.steps if not step.precision and any(name in floating
                                                                            for name in step.outputs)]


def _int8_kinds() -> frozenset[str]:
    """The layer kinds passes/quantize_int8.py (weight_channel_axis) may quantize."""
    from ..ir import ops

    return frozenset(op.KIND for op in (ops.Convolution, ops.FusedConvolution, ops.FullyConnected, ops.Deconvolution,
                                        ops.FusedDeconvolution, ops.MatrixMultiply, ops.FusedMatMul))


def with_reusable_calibration(config):
    """An INT8 config whose calibrator calibrates once: each trial build reuses the first build's scales (a data
    calibrator hands out its batches once), so every trial quantizes alike."""
    if config.int8 is None or config.int8.calibrator is None or isinstance(config.int8.calibrator, _CalibrateOnce):
        return config
    return dataclasses.replace(config, int8=dataclasses.replace(
        config.int8, calibrator=_CalibrateOnce(config.int8.calibrator)))


class _CalibrateOnce:
    """A calibrator that forwards to `inner` until a calibration cache is written, and then reads that cache."""

    def __init__(self, inner):
        self.inner, self.cache = inner, None

    def __getattr__(self, name: str):  # algorithm, settings, max_batches, progress: the inner calibrator's
        return getattr(self.inner, name)

    def get_batch(self, inputs):
        return self.inner.get_batch(inputs)

    def read_calibration_cache(self):
        return self.cache if self.cache is not None else self.inner.read_calibration_cache()

    def write_calibration_cache(self, cache: str) -> None:
        self.cache = cache
        self.inner.write_calibration_cache(cache)


# ---- the layer-precision file ------------------------------------------------------------------
def write_layer_precisions(path: str | Path, overrides: Mapping[str, str], **notes: Any) -> None:
    """Write `overrides` ({step name: precision}) as a layer-precision file, with `notes` (model, tolerance)."""
    document = {"format": FILE_FORMAT, "version": FILE_VERSION, **notes, "layers": dict(overrides)}
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def read_layer_precisions(path: str | Path) -> dict[str, str]:
    """{step name: precision} of a layer-precision file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise LayerPrecisionError(f"layer-precision file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LayerPrecisionError(f"cannot read layer-precision file {str(path)!r} as JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise LayerPrecisionError(f"{str(path)!r} is not a layer-precision file (its JSON needs \"format\": "
                                  f"\"{FILE_FORMAT}\"; kiln compare --check-precision writes one)")
    if document.get("version") != FILE_VERSION:
        raise LayerPrecisionError(f"{str(path)!r} has version {document.get('version')!r}; this tensorkiln reads "
                                  f"version {FILE_VERSION}")
    layers = document.get("layers")
    if not isinstance(layers, dict) or not all(isinstance(name, str) and name for name in layers):
        raise LayerPrecisionError(f"{str(path)!r}: \"layers\" must map step names to precisions")
    return {name: _checked_precision(precision, f"{str(path)!r}, layer {name!r}")
            for name, precision in layers.items()}


def parse_layer_precisions(text: str) -> dict[str, str]:
    """`--layer-precisions`: `@FILE` (a layer-precision file) or inline `NAME:PRECISION[,NAME:PRECISION...]`
    (a name ends at its last colon, so `Conv:185.fused:fp32` works)."""
    text = text.strip()
    if text.startswith("@"):
        return read_layer_precisions(text[1:])
    overrides: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, colon, precision = item.rpartition(":")
        if not colon or not name:
            raise LayerPrecisionError(f"--layer-precisions item {item!r} is not NAME:PRECISION; write it like "
                                      "Conv:185.fused:fp32, or give a file as @FILE")
        if name in overrides:
            raise LayerPrecisionError(f"--layer-precisions gives layer {name!r} twice")
        overrides[name] = _checked_precision(precision, f"--layer-precisions item {item!r}")
    return overrides


def layer_precisions_config(text: str | None) -> tuple:
    """BuilderConfig.layer_precisions of a --layer-precisions value (None or empty: none)."""
    if not text:
        return ()
    from ..quant.precision import Precision

    return tuple((name, Precision(precision)) for name, precision in parse_layer_precisions(text).items())


def _checked_precision(precision: Any, where: str) -> str:
    if not isinstance(precision, str) or precision.lower() not in LAYER_PRECISIONS:
        raise LayerPrecisionError(f"{where}: precision {precision!r} is not one of {', '.join(LAYER_PRECISIONS)}")
    return precision.lower()
