"""Refit (tools/refit.py, kiln refit): an engine refit with new weights equals a fresh build of the new weights
exactly (outputs and every engine weight), keeps its tactics, and refuses weights of another name, shape or dtype,
or weights that would make another engine, with one clear error."""
import copy
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.cli.main import main as kiln
from tensorkiln.errors import EngineFormatError, RefitError
from tensorkiln.plan.file_format import serialize
from tensorkiln.quant.calibrator import DataCalibrator
from tensorkiln.quant.int8 import Int8Options
from tensorkiln.runtime import Runtime
from tensorkiln.tools.refit import Refitter, first_difference, refit_onnx

SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"


def _model(nodes, inputs, outputs, weights: dict, name="net") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(value, key) for key, value in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv_bn_relu(seed: int, extra_relu: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weights = {"W": rng.standard_normal((8, 3, 3, 3)), "B": rng.standard_normal(8), "scale": rng.uniform(0.5, 2, 8),
               "shift": rng.standard_normal(8), "mean": rng.standard_normal(8), "var": rng.uniform(0.5, 2, 8)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r" if extra_relu else "y"])]
    if extra_relu:
        nodes.append(helper.make_node("Sigmoid", ["r"], ["y"]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 11, 7])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 11, 7])],
                  {k: v.astype(np.float32) for k, v in weights.items()}, "conv_bn_relu")


def qkv_projections(seed: int) -> onnx.ModelProto:
    """Three MatMul + bias Add + Relu siblings on one input: fuse_horizontal merges them into one wide GEMM."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], {}
    for part, width in (("q", 16), ("k", 16), ("v", 24)):
        weights[f"W{part}"] = rng.standard_normal((12, width)).astype(np.float32)
        weights[f"b{part}"] = rng.standard_normal(width).astype(np.float32)
        nodes += [helper.make_node("MatMul", ["x", f"W{part}"], [f"m{part}"]),
                  helper.make_node("Add", [f"m{part}", f"b{part}"], [f"a{part}"]),
                  helper.make_node("Relu", [f"a{part}"], [f"r{part}"])]
    nodes.append(helper.make_node("Concat", ["rq", "rk", "rv"], ["y"], axis=-1))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 12])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 56])], weights, "qkv")


def build(model, **config) -> tk.Engine:
    return tk.Builder(tk.BuilderConfig(**config)).build(tk.parse_onnx(model))


def fresh_build(model, old: tk.Engine, **config) -> tk.Engine:
    """A build of `model` from scratch, but for the tactics: it takes the old engine's, which a refit keeps (where a
    build times tactics, it could time its way to others, and outputs would differ by rounding)."""
    return build(model, tactic_hints=tuple((step.name, step.tactic) for step in old.plan.steps), **config)


def execute(engine: tk.Engine, feed: dict) -> dict:
    return engine.create_execution_context().execute(feed)


def random_feed(engine: tk.Engine, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {spec.name: rng.standard_normal(spec.shape).astype(np.float32) for spec in engine.inputs}


def assert_same_engine(refit: tk.Engine, fresh: tk.Engine, old: tk.Engine) -> None:
    """Exactly a fresh build: the same steps and tactics as the old engine, bit-equal weights and outputs."""
    assert [s.tactic for s in refit.plan.steps] == [s.tactic for s in old.plan.steps]
    assert first_difference(fresh.plan, refit.plan) == ""
    assert sorted(refit.weights) == sorted(fresh.weights)
    for name, value in fresh.weights.items():
        assert torch.equal(refit.weights[name], value), name
    feed = random_feed(old)
    expected, got, before = execute(fresh, feed), execute(refit, feed), execute(old, feed)
    for name, value in expected.items():
        assert np.array_equal(got[name], value), name
        assert not np.array_equal(before[name], value), name  # the test would catch a refit that changed nothing


def onnxruntime_outputs(model: onnx.ModelProto, feed: dict) -> dict:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


# ---- equality with a fresh build ----------------------------------------------------------------------------------
def test_conv_batchnorm_relu_refit_equals_fresh_build_and_onnxruntime():
    old = build(conv_bn_relu(1))
    assert old.plan.build_info["pass_counts"]["fold_scale.scale_into_convolution"] == 1  # BatchNorm into the conv
    record = old.plan.build_info["refit"]
    assert sorted(w["name"] for w in record["model_weights"]) == ["B", "W", "mean", "scale", "shift", "var"]
    for sources in record["derived"].values():  # the folded weight and bias come from all six
        assert sorted(sources) == ["B", "W", "mean", "scale", "shift", "var"]
    new_model = conv_bn_relu(2)
    refit = refit_onnx(old, new_model)
    assert_same_engine(refit, fresh_build(new_model, old), old)
    feed = random_feed(old, seed=3)
    np.testing.assert_allclose(execute(refit, feed)["y"], onnxruntime_outputs(new_model, feed)["y"],
                               rtol=1e-5, atol=1e-5)


def test_refitter_set_weights_changes_one_weight_and_the_folded_ones():
    old_model = conv_bn_relu(1)
    old = build(old_model)
    refitter = Refitter(old)
    assert refitter.refittable_weights()["var"].shape == (8,)
    assert set(refitter.engine_weights_of("var")) == {w.name for w in old.plan.weights if w.dtype.is_floating}
    new_var = np.random.default_rng(9).uniform(0.1, 3, 8).astype(np.float32)
    refitter.set_weights("var", new_var)
    refit = refitter.refit(old_model)
    expected_model = copy.deepcopy(old_model)
    var = next(t for t in expected_model.graph.initializer if t.name == "var")
    var.CopyFrom(numpy_helper.from_array(new_var, "var"))
    assert_same_engine(refit, fresh_build(expected_model, old), old)


def test_horizontally_fused_weights_are_recomputed():
    old = build(qkv_projections(1))
    assert old.plan.build_info["pass_counts"]["fuse_horizontal.matrix_multiply_layers"] == 3
    assert [step.kind for step in old.plan.steps] == ["fused_matmul", "split", "concatenation"]  # one wide GEMM
    new_model = qkv_projections(2)
    assert_same_engine(refit_onnx(old, new_model), fresh_build(new_model, old), old)


def test_int8_refit_quantizes_new_weights_at_the_recorded_activation_scales(tmp_path):
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((1, 3, 11, 7)).astype(np.float32) for _ in range(4)]
    cache = tmp_path / "calibration.cache"
    int8 = dict(precision=tk.Precision.INT8)
    old = build(conv_bn_relu(1), int8=Int8Options(DataCalibrator(data, "minmax", cache_path=cache)), **int8)
    assert old.plan.build_info["refit"]["int8_calibration"] == cache.read_text()
    new_model = conv_bn_relu(2)
    fresh = fresh_build(new_model, old, int8=Int8Options(DataCalibrator(None, "minmax", cache_path=cache)), **int8)
    assert_same_engine(refit_onnx(old, new_model), fresh, old)


def test_the_refit_record_survives_the_engine_file_and_the_refit_engine_is_refittable(tmp_path):
    old = build(conv_bn_relu(1))
    loaded = Runtime().deserialize(old.serialize())
    assert loaded.plan.build_info["refit"] == old.plan.build_info["refit"]
    twice = refit_onnx(refit_onnx(loaded, conv_bn_relu(2)), conv_bn_relu(3))
    assert_same_engine(twice, fresh_build(conv_bn_relu(3), old), old)


# ---- errors -------------------------------------------------------------------------------------------------------
def test_wrong_shape_dtype_or_name_is_one_clear_error():
    refitter = Refitter(build(conv_bn_relu(1)))
    with pytest.raises(RefitError, match=r"'W' are float32 \[8, 3, 5, 5\], but the engine was built with float32 "
                                         r"\[8, 3, 3, 3\]"):
        refitter.set_weights("W", np.zeros((8, 3, 5, 5), np.float32))
    with pytest.raises(RefitError, match=r"'B' are float64 \[8\], but the engine was built with float32 \[8\]"):
        refitter.set_weights("B", np.zeros(8))
    with pytest.raises(RefitError, match=r"'conv9' is not a refittable weight of this engine; its refittable "
                                         r"weights are B, W, mean"):
        refitter.set_weights("conv9", np.zeros(8, np.float32))


def test_a_model_of_other_shapes_is_refused_before_anything_is_built():
    old = build(conv_bn_relu(1))
    model = conv_bn_relu(2)
    weight = next(t for t in model.graph.initializer if t.name == "W")
    weight.CopyFrom(numpy_helper.from_array(np.ones((8, 3, 1, 1), np.float32), "W"))
    with pytest.raises(RefitError, match=r"new weights for 'W' are float32 \[8, 3, 1, 1\]"):
        refit_onnx(old, model)


def test_weights_that_make_another_engine_are_refused_naming_the_first_difference():
    old = build(conv_bn_relu(1))
    with pytest.raises(RefitError, match=r"would make a different engine: it has 2 steps instead of 1|"
                                         r"different engine: step 0 .* fused_from"):
        refit_onnx(old, conv_bn_relu(2, extra_relu=True))


def test_an_engine_without_a_refit_record_still_loads_and_refit_says_to_rebuild():
    engine = build(conv_bn_relu(1))
    info = {key: value for key, value in engine.plan.build_info.items() if key != "refit"}  # as older engines are
    older = Runtime().deserialize(serialize(dataclasses.replace(engine.plan, build_info=info), engine.weights))
    assert np.array_equal(execute(older, random_feed(older))["y"], execute(engine, random_feed(older))["y"])
    with pytest.raises(RefitError, match="records no refit information .* rebuild the engine"):
        Refitter(older)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["derived"].update({"Conv:c.weight": ["nope"]}), "derived 'Conv:c.weight'\\[0\\] 'nope' is not one"),
    (lambda r: r["model_weights"][0].update(shape=[-3]), "shape"),
    (lambda r: r["derived"].update({"Conv:c.weight": [["W"]]}), "derived 'Conv:c.weight'\\[0\\] must be a string"),
    (lambda r: r["config"].update(passes="fold_scale"), "config passes must be a list"),
    (lambda r: r.update(int8_keep_float=-1), "int8_keep_float must not be negative"),
    (lambda r: r.update(extra=1), "unknown keys \\['extra'\\]"),
])
def test_a_corrupted_refit_record_is_refused_at_load(edit, message):
    engine = build(conv_bn_relu(1))
    info = copy.deepcopy(engine.plan.build_info)
    edit(info["refit"])
    blob = serialize(dataclasses.replace(engine.plan, build_info=info), engine.weights)
    with pytest.raises(EngineFormatError, match=message):
        Runtime().deserialize(blob)


# ---- kiln refit ---------------------------------------------------------------------------------------------------
def test_kiln_refit_from_onnx_and_from_npz(tmp_path, capsys):
    old_path, new_path = tmp_path / "old.onnx", tmp_path / "new.onnx"
    onnx.save(conv_bn_relu(1), old_path)
    onnx.save(conv_bn_relu(2), new_path)
    assert kiln(["build", str(old_path), "-o", str(tmp_path / "old.engine")]) == 0
    assert kiln(["refit", str(tmp_path / "old.engine"), "--weights", str(new_path), "-o",
                 str(tmp_path / "a.engine")]) == 0
    assert "engine weights recomputed" in capsys.readouterr().out
    weights = {t.name: numpy_helper.to_array(t) for t in conv_bn_relu(2).graph.initializer}
    np.savez(tmp_path / "new.npz", **weights)
    assert kiln(["refit", str(tmp_path / "old.engine"), "--weights", str(tmp_path / "new.npz"), "--model",
                 str(old_path), "-o", str(tmp_path / "b.engine")]) == 0
    old = Runtime().load(tmp_path / "old.engine")
    fresh = fresh_build(conv_bn_relu(2), old)
    for name in ("a", "b"):
        assert_same_engine(Runtime().load(tmp_path / f"{name}.engine"), fresh, old)
    assert kiln(["refit", str(tmp_path / "old.engine"), "--list"]) == 0
    assert "var  float32 [8]" in capsys.readouterr().out


def test_kiln_refit_errors_are_one_line(tmp_path, capsys):
    onnx.save(conv_bn_relu(1), tmp_path / "old.onnx")
    assert kiln(["build", str(tmp_path / "old.onnx"), "-o", str(tmp_path / "old.engine")]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "bad.npz", W=np.zeros((8, 3), np.float32))
    for args, fragment in (
        (["--weights", str(tmp_path / "bad.npz")], "give the model the engine was built from with --model"),
        ([], "give the new weights and the refit engine's path"),
        (["--weights", str(tmp_path / "bad.npz"), "--model", str(tmp_path / "old.onnx")],
         "new weights for 'W' are float32 [8, 3]"),
    ):
        assert kiln(["refit", str(tmp_path / "old.engine"), *args, "-o", str(tmp_path / "x.engine")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kiln: error: ") and err.count("\n") == 1 and fragment in err, err


# ---- a real model -------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason="needs ../shared/models")
def test_ultraface_refit_with_perturbed_weights_equals_a_fresh_build():
    model = onnx.load(SHARED_MODELS / "onnx" / "ultraface" / "version-slim-320_without_postprocessing.onnx")
    old = build(model)
    refitter = Refitter(old)
    assert len(refitter.refittable_weights()) > 50
    rng = np.random.default_rng(0)
    new_model = copy.deepcopy(model)
    for tensor in new_model.graph.initializer:
        if tensor.name in refitter.refittable_weights():  # positive factors: BatchNorm variances stay positive
            value = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array((value * rng.uniform(0.8, 1.2, value.shape)).astype(value.dtype),
                                                    tensor.name))
    refit = refit_onnx(old, new_model)
    assert_same_engine(refit, fresh_build(new_model, old), old)
    feed = random_feed(old, seed=1)
    expected = onnxruntime_outputs(new_model, feed)
    for name, value in execute(refit, feed).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_cuda_fp16_refit_keeps_tactics_and_equals_a_fresh_build():
    config = dict(target=tk.Target.CUDA, precision=tk.Precision.FP16)
    old = build(conv_bn_relu(1), **config)
    refit = refit_onnx(old, conv_bn_relu(2))
    fresh = fresh_build(conv_bn_relu(2), old, **config)
    assert_same_engine(refit, fresh, old)
