"""tensorkiln.tools.compare and tools.precision: accuracy against onnxruntime, output by output and layer by layer,
and the search for the layers a reduced-precision engine must keep in FP32."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import compare_models
import tensorkiln.runtime.context as context_module
from tensorkiln.builder import Builder, BuilderConfig, Target
from tensorkiln.errors import BuildError
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.quant.calibrator import DataCalibrator
from tensorkiln.quant.int8 import Int8Options
from tensorkiln.quant.precision import Precision
from tensorkiln.tools.compare import CompareError, build_engine, compare_with_onnxruntime, onnxruntime_outputs
from tensorkiln.tools.precision import (LayerPrecisionError, _search, find_precision_layers, layer_precisions_config,
                                        parse_layer_precisions, read_layer_precisions, write_layer_precisions)
from tensorkiln.tools.tensor_diff import Tolerance, compare_arrays

ULTRAFACE = "models/onnx/ultraface/version-slim-320_without_postprocessing.onnx"


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    return compare_models.export_small_cnn(tmp_path_factory.mktemp("cnn") / "small_cnn.onnx")


# ---- the element rule ---------------------------------------------------------------------------
def test_compare_arrays_counts_elements_as_numpy_isclose_does():
    rng = np.random.default_rng(3)
    expected = rng.standard_normal(1000)
    actual = expected + rng.standard_normal(1000) * 1e-3
    actual[[5, 6]], expected[[5, 7]] = np.nan, np.nan  # 5: NaN on both sides; 6, 7: NaN on one side only
    actual[8] = expected[8] = np.inf  # the same infinity: a match
    actual[9], expected[9] = np.inf, 1.0
    tolerance = Tolerance(atol=1e-3, rtol=1e-3)
    got = compare_arrays("t", actual, expected, tolerance)
    within = np.isclose(actual, expected, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True)
    assert got.mismatched == int((~within).sum()) > 3
    assert got.nan_mismatches == 2
    assert got.max_abs_error == np.inf and not got.passed
    finite = np.isfinite(actual) & np.isfinite(expected)
    assert got.mean_abs_error == pytest.approx(np.abs(actual[finite] - expected[finite]).mean())


def test_compare_arrays_errors_and_cosine():
    expected = np.array([[1.0, -2.0], [4.0, 0.0]], np.float32)
    actual = np.array([[1.5, -2.0], [4.0, 0.25]], np.float32)
    got = compare_arrays("t", actual, expected, Tolerance(atol=0.3, rtol=0.0))
    assert (got.max_abs_error, got.max_rel_error, got.mismatched, got.size) == (0.5, 0.5, 1, 4)
    a, b = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    assert got.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert compare_arrays("t", actual, expected, Tolerance(atol=0.5, rtol=0.0)).passed  # the bound is inclusive
    wrong_shape = compare_arrays("t", actual.ravel(), expected, Tolerance(1.0, 1.0))
    assert not wrong_shape.passed and "shape (4,)" in wrong_shape.note


# ---- whole models against onnxruntime -------------------------------------------------------------
def test_ultraface_matches_onnxruntime_layer_by_layer(shared_dir):
    reference = np.load(shared_dir / "models/onnx/ultraface/reference_version-slim-320_without_postprocessing.npz")
    inputs = {"input": reference["input:input"]}  # a real face photo, preprocessed
    result = compare_with_onnxruntime(shared_dir / ULTRAFACE, inputs=inputs, layerwise=True)
    assert result.passed and result.first_failing_layer is None, result.failed_outputs
    assert [o.name for o in result.outputs] == ["scores", "boxes"]
    assert all(o.cosine > 0.99999 and o.max_abs_error < 1e-4 for o in result.outputs)
    # 55 steps: every step whose output the model names is compared, each once, in execution order
    assert len(result.layers) + result.uncompared_steps >= 53 and result.uncompared_steps <= 3
    assert result.layers[-1].name in ("scores", "boxes") and result.layers[0].fused_from[0] == "Conv:185"


def test_exported_torch_model_matches_onnxruntime(small_cnn):
    result = compare_with_onnxruntime(small_cnn, layerwise=True, seed=7)
    assert result.passed, result.outputs
    assert result.precision == "fp32" and result.tolerance == Tolerance(atol=1e-4, rtol=1e-3)
    assert any(len(layer.fused_from) >= 3 for layer in result.layers)  # conv + batchnorm + relu, compared as one
    assert result.layers[-1].name == "probabilities" and result.first_failing_layer is None
    probabilities = result.outputs[0]
    assert probabilities.shape == (1, 5) and probabilities.max_abs_error < 1e-6


def _break_step(monkeypatch, step_count: int, index: int) -> None:
    """Make the kernel of step `index` (of every context's steps, in order) add 1.0 to its outputs."""
    original, calls = context_module.kernel_for_tactic, itertools.count()

    def kernel_for_tactic(tactic, target):
        kernel = original(tactic, target)
        if next(calls) % step_count != index:
            return kernel
        return lambda op, args: [output + 1.0 for output in kernel(op, args)]

    monkeypatch.setattr(context_module, "kernel_for_tactic", kernel_for_tactic)


@pytest.mark.parametrize("which", ["first fused convolution", "a later step"])
def test_layerwise_names_the_broken_tactic_first(small_cnn, monkeypatch, which):
    engine = build_engine(parse_onnx_model(small_cnn))
    clean = compare_with_onnxruntime(small_cnn, engine, layerwise=True)
    compared = [layer.layer for layer in clean.layers]
    broken = compared[0] if which == "first fused convolution" else compared[len(compared) // 2]
    index = [step.name for step in engine.plan.steps].index(broken)
    _break_step(monkeypatch, len(engine.plan.steps), index)
    result = compare_with_onnxruntime(small_cnn, engine, layerwise=True)
    assert result.first_failing_layer.layer == broken
    assert result.first_failing_layer.max_abs_error == pytest.approx(1.0, abs=1e-4)  # the added 1.0
    assert all(layer.passed for layer in result.layers[:compared.index(broken)])
    assert not result.passed


def parse_onnx_model(path):
    import onnx

    return onnx.load(str(path))


# ---- the precision search -----------------------------------------------------------------------
@pytest.mark.parametrize("needed", [(), (7,), (0, 19), (3, 11, 17)])
def test_search_finds_exactly_the_needed_layers(needed):
    candidates = [f"layer{i}" for i in range(20)]
    wanted = {f"layer{i}" for i in needed}
    trials = []

    def passes(kept):
        trials.append(tuple(kept))
        return wanted <= set(kept)

    if not needed:
        assert _search(candidates, passes) == ()
        return
    assert sorted(_search(candidates, passes)) == sorted(wanted)
    assert len(trials) <= len(needed) * (5 + 1) + len(needed) + 1  # about log2(20) builds per needed layer


def _int8_config():
    batches = [np.random.default_rng(seed).standard_normal((1, 4, 8, 8)).astype(np.float32) for seed in range(8)]
    return BuilderConfig(precision=Precision.INT8, int8=Int8Options(DataCalibrator(batches, "minmax")))


INT8_TOLERANCE = Tolerance(atol=0.2, rtol=0.05)  # the outputs reach about 8: 2.5% of the range


def test_int8_search_keeps_the_one_ruined_layer(tmp_path):
    model = compare_models.int8_outlier_model()
    search = find_precision_layers(model, _int8_config(), tolerance=INT8_TOLERANCE)
    assert search.layers == ("conv2.fused",) and search.candidates == 3 and search.builds <= 6
    path = tmp_path / "precisions.json"
    write_layer_precisions(path, search.overrides(), model="outlier")
    assert read_layer_precisions(path) == {"conv2.fused": "fp32"}
    # the written file makes the build pass; without it the same build fails
    fixed = dataclasses.replace(_int8_config(), layer_precisions=layer_precisions_config(f"@{path}"))
    assert compare_with_onnxruntime(model, config=fixed, tolerance=INT8_TOLERANCE).passed
    assert not compare_with_onnxruntime(model, config=_int8_config(), tolerance=INT8_TOLERANCE).passed


def _fp16_search(target: Target):
    model = compare_models.fp16_overflow_model()
    x = np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32) * 8  # conv3 reaches ~1.3e5
    reference = onnxruntime_outputs(model, {"x": x})["y"]
    assert np.abs(reference).max() > 65504
    tolerance = Tolerance(atol=1e-2 * float(np.abs(reference).max()), rtol=1e-2)
    config = BuilderConfig(target=target, precision=Precision.FP16, opt_level=0)
    baseline = compare_with_onnxruntime(model, config=config, inputs={"x": x}, tolerance=tolerance)
    assert not baseline.passed and baseline.outputs[0].max_abs_error == np.inf  # FP16 infinities
    search = find_precision_layers(model, config, inputs={"x": x}, tolerance=tolerance)
    assert search.layers == ("conv3",)
    fixed = dataclasses.replace(config, layer_precisions=tuple((name, Precision.FP32) for name in search.layers))
    assert compare_with_onnxruntime(model, config=fixed, inputs={"x": x}, tolerance=tolerance).passed


def test_fp16_search_keeps_the_overflowing_layer_cpu(monkeypatch):
    # The CPU target refuses FP16 engines because they are slow there, not wrong: torch's CPU kernels compute in
    # FP16. Lifting that one refusal runs the FP16 search (FP32 overrides, FP16 infinities) without a GPU.
    check = Builder._check_config
    monkeypatch.setattr(Builder, "_check_config", lambda builder: check(_Fp32View(builder)))
    _fp16_search(Target.CPU)


class _Fp32View:
    """A builder seen with an FP32 config (for Builder._check_config, which refuses FP16 on the CPU)."""

    def __init__(self, builder):
        self.config = dataclasses.replace(builder.config, precision=Precision.FP32)


@pytest.mark.gpu
def test_fp16_search_keeps_the_overflowing_layer_cuda():
    _fp16_search(Target.CUDA)


def test_the_search_is_reachable_from_the_compare_module():
    import tensorkiln.tools.compare as compare_module

    assert compare_module.find_precision_layers is find_precision_layers
    with pytest.raises(AttributeError):
        compare_module.no_such_tool  # noqa: B018


def test_search_refuses_an_error_that_is_not_precision(monkeypatch):
    original = context_module.kernel_for_tactic

    def every_kernel_broken(tactic, target):
        kernel = original(tactic, target)
        return lambda op, args: [output + 1.0 for output in kernel(op, args)]

    monkeypatch.setattr(context_module, "kernel_for_tactic", every_kernel_broken)
    with pytest.raises(CompareError, match="even with all 3 int8 layers in FP32.*--layerwise"):
        find_precision_layers(compare_models.int8_outlier_model(), _int8_config(), tolerance=INT8_TOLERANCE)


# ---- layer-precision files and overrides ---------------------------------------------------------------
def test_inline_layer_precisions_and_errors(tmp_path):
    assert parse_layer_precisions("Conv:185.fused:fp32, head:FP16") == {"Conv:185.fused": "fp32", "head": "fp16"}
    with pytest.raises(LayerPrecisionError, match="not one of fp32"):
        parse_layer_precisions("conv1:int8")
    with pytest.raises(LayerPrecisionError, match="not NAME:PRECISION"):
        parse_layer_precisions("conv1")
    with pytest.raises(LayerPrecisionError, match="does not exist"):
        parse_layer_precisions(f"@{tmp_path / 'missing.json'}")
    (tmp_path / "other.json").write_text('{"layers": {"a": "fp32"}}')
    with pytest.raises(LayerPrecisionError, match="not a layer-precision file"):
        read_layer_precisions(tmp_path / "other.json")


def test_builder_refuses_a_layer_precision_for_a_layer_it_does_not_have():
    model = compare_models.int8_outlier_model()
    config = BuilderConfig(layer_precisions=(("conv2", Precision.FP32),))  # the ONNX node, fused into conv2.fused
    with pytest.raises(BuildError, match="'conv2'.*kiln inspect ENGINE --layers"):
        Builder(config).build(parse_onnx(model))
    config = BuilderConfig(layer_precisions=(("conv2.fused", Precision.FP32),))
    engine = Builder(config).build(parse_onnx(model))
    assert [step.precision for step in engine.plan.steps] == ["", "fp32", ""]


def test_int8_layer_precision_keeps_the_layer_unquantized():
    model = compare_models.int8_outlier_model()
    config = dataclasses.replace(_int8_config(), layer_precisions=(("conv2.fused", Precision.FP32),))
    engine = Builder(config).build(parse_onnx(model))
    readers = {step.name: step.inputs for step in engine.plan.steps}
    producers = {output: step.name for step in engine.plan.steps for output in step.outputs}
    assert producers[readers["conv2.fused"][0]] == "conv1.fused"  # read as computed: no quantizing step between
    assert producers[readers["conv3"][0]] != "conv2.fused"  # conv3 still reads a quantized input
    w2 = onnx_initializer(model, "w2")
    assert np.array_equal(engine.weights[readers["conv2.fused"][1]].numpy(), w2)  # not rounded to INT8 steps
    assert not np.array_equal(engine.weights[readers["conv1.fused"][1]].numpy(), onnx_initializer(model, "w1"))


def onnx_initializer(model, name):
    from onnx import numpy_helper

    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)
