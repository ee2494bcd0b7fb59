"""Optimization profiles (issue 20): one engine for ranges of shapes, checked against onnxruntime at every shape.

The model (tests/conftest.py dynamic_model) is exported by torch with dynamic axes, so its reshape targets come from
Shape ops (as exporters write them): a specialization that kept another shape's folded targets would give wrong
shapes or values here.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest

from tensorkiln.errors import BuildError, EngineFormatError, InputError
from tensorkiln.plan.profiles import OptimizationProfile, ShapeRange, profiles_from_json, profiles_from_shape_specs
from tensorkiln.plan.schema import PlanProblem
from tensorkiln.profile_builder import ModelSource, build_with_profiles
from tensorkiln.runtime import Runtime
from tensorkiln.runtime.profiles import ProfiledEngine


def _range(low, opt, high) -> OptimizationProfile:
    return OptimizationProfile((("x", ShapeRange(low, opt, high)),))


TWO_PROFILES = (_range((1, 3, 4, 4), (2, 3, 8, 8), (4, 3, 16, 16)), _range((8, 3, 2, 2), (8, 3, 6, 6), (16, 3, 6, 6)))


@pytest.fixture(scope="module")
def engine(dynamic_model) -> ProfiledEngine:
    built = build_with_profiles(ModelSource.from_onnx(dynamic_model), TWO_PROFILES)
    return Runtime().deserialize(built.serialize())  # through the file: what users run


def _check(outputs, model: bytes, x: np.ndarray) -> None:
    expected = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for name, reference in zip(("tokens", "probs"), expected):
        assert outputs[name].shape == reference.shape
        np.testing.assert_allclose(outputs[name], reference, rtol=1e-4, atol=1e-5)


def test_every_shape_in_two_profiles_matches_onnxruntime(engine, dynamic_model):
    rng = np.random.default_rng(1)
    context = engine.create_execution_context()
    for shape in [(2, 3, 8, 8), (1, 3, 4, 4), (3, 3, 5, 13), (4, 3, 16, 16), (1, 3, 4, 4)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        _check(context.execute({"x": x}), dynamic_model, x)
    context.set_optimization_profile(1)
    for shape in [(8, 3, 6, 6), (16, 3, 2, 5)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        _check(context.execute({"x": x}), dynamic_model, x)
    # min, opt and max of both profiles were built ahead; (3, 3, 5, 13) and (16, 3, 2, 5) were specialized
    assert len(engine.specialization_seconds) == 2


def test_shapes_outside_the_profile_are_one_clear_error(engine):
    context = engine.create_execution_context()
    with pytest.raises(InputError, match=r"input 'x' of shape 8x3x6x6 is outside .* profile 0; select profile 1"):
        context.execute({"x": np.ones((8, 3, 6, 6), np.float32)})
    with pytest.raises(InputError, match=r"outside min 1x3x4x4 opt 2x3x8x8 max 4x3x16x16 .* rebuild the engine"):
        context.execute({"x": np.ones((1, 3, 17, 4), np.float32)})
    with pytest.raises(InputError, match="profile 2 does not exist"):
        context.set_optimization_profile(2)
    with pytest.raises(InputError, match="outside"):
        context.set_input_shape("x", (5, 3, 8, 8))


def test_engine_reports_ranges_and_output_shapes_for_set_input_shapes(engine):
    assert engine.num_optimization_profiles == 2
    assert engine.get_tensor_shape("x") == (-1, 3, -1, -1)
    assert engine.get_tensor_shape("tokens") == (-1, -1, 8) and engine.get_tensor_shape("probs") == (-1, 5)
    assert engine.get_tensor_profile_shape("x", 1) == ((8, 3, 2, 2), (8, 3, 6, 6), (16, 3, 6, 6))
    context = engine.create_execution_context()
    context.set_input_shape("x", (3, 3, 4, 10))
    assert context.get_tensor_shape("x") == (3, 3, 4, 10)
    assert context.get_tensor_shape("tokens") == (3, 40, 8)


def test_a_shape_met_before_reuses_its_context(engine):
    context = engine.create_execution_context(max_shapes=2)
    x = np.ones((2, 3, 8, 8), np.float32)
    first = context.context_for({"x": x.shape})
    context.execute({"x": x})
    assert context.context_for({"x": x.shape}) is first
    context.execute({"x": np.ones((1, 3, 4, 4), np.float32)})
    context.execute({"x": np.ones((4, 3, 16, 16), np.float32)})  # a third shape: the oldest context goes
    assert context.context_for({"x": x.shape}) is not first


def test_data_dependent_outputs_keep_working(tmp_path):
    node = onnx.helper.make_node("NonZero", ["x"], ["indices"])
    graph = onnx.helper.make_graph([node], "nonzero", [onnx.helper.make_tensor_value_info("x", 1, ["n", 4])],
                                   [onnx.helper.make_tensor_value_info("indices", 7, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()
    engine = build_with_profiles(ModelSource.from_onnx(model), [OptimizationProfile(
        (("x", ShapeRange((1, 4), (3, 4), (9, 4))),))])
    context = engine.create_execution_context()
    for rows in (1, 5, 9):
        x = (np.arange(rows * 4).reshape(rows, 4) % 3).astype(np.float32)
        np.testing.assert_array_equal(context.execute({"x": x})["indices"], np.stack(np.nonzero(x)))


def test_profile_specs_like_trtexec():
    [profile] = profiles_from_shape_specs([{"x": (1, 3)}], [{"x": (4, 3), "y": (2,)}], [{"x": (8, 3)}])
    assert profile.range_of("x") == ShapeRange((1, 3), (4, 3), (8, 3))
    assert profile.range_of("y") == ShapeRange((2,), (2,), (2,))  # only an opt shape: a fixed input
    with pytest.raises(ValueError, match="does not hold"):
        profiles_from_shape_specs([{"x": (5, 3)}], [{"x": (4, 3)}], [{"x": (8, 3)}])
    with pytest.raises(ValueError, match="different ranks"):
        ShapeRange((1,), (1, 2), (1, 2))


@pytest.mark.parametrize("data, problem", [
    ([], "1 to 64 profiles"), ([{}], "map input names"), ([{"x": {"min": [1], "max": [2]}}], "exactly the keys"),
    ([{"x": {"min": [1], "opt": [True], "max": [2]}}], "list of at most"),
    ([{"x": {"min": [3], "opt": [2], "max": [4]}}], "does not hold"),
    ([{"x": {"min": [1] * 17, "opt": [1] * 17, "max": [1] * 17}}], "at most 16"),
])
def test_profiles_in_a_file_are_validated(data, problem):
    with pytest.raises(PlanProblem, match=problem):
        profiles_from_json(data)


def _edited(blob: bytes, field: str, edit) -> bytes:
    """The engine file with one metadata field edited and re-sealed (the checksum proves nothing against an edit)."""
    from safetensors.torch import load, save

    from tensorkiln.plan.file_format import _metadata, _split
    from tensorkiln.plan.profile_file import _checksum

    header, _ = _split(blob)
    metadata = dict(_metadata(header, "engine"))
    metadata[field] = json.dumps(edit(json.loads(metadata[field])))
    tensors = load(blob)
    draft = save(tensors, metadata=metadata)
    metadata["checksum"] = _checksum(metadata, _split(draft)[1])
    return save(tensors, metadata=metadata)


def _set(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize("field, path, value, problem", [
    ("recipe", ["target"], "tpu", "target 'tpu'"),
    ("recipe", ["passes"], ["import os"], "passes must be a list"),
    ("recipe", ["precision"], "int8", "precision 'int8'"),
    ("source", ["kind"], "pickle", "source kind 'pickle'"),
    ("variants", [0, "profile"], 7, "profile must be a profile index"),
    ("variants", [0, "shapes", "x"], [2, 3, 99, 8], "is not in min"),
    ("variants", [0, "weights", "conv.weight"], "source", "must map weight names"),
    ("profiles", [0, "x", "opt"], [3, 3, 8, 8], "has no engine built for its opt shapes"),
])
def test_edited_profile_fields_are_refused(engine, field, path, value, problem):
    blob = _edited(engine.serialize(), field, lambda data: _set(data, path, value))
    with pytest.raises(EngineFormatError, match=problem):
        Runtime().deserialize(blob)


def test_a_corrupted_profiled_engine_is_refused(engine):
    blob = bytearray(engine.serialize())
    blob[-10] ^= 0xFF
    with pytest.raises(EngineFormatError, match="corrupted"):
        Runtime().deserialize(bytes(blob))


def test_a_model_that_cannot_take_a_bound_fails_at_build_time(dynamic_model):
    too_small = OptimizationProfile((("x", ShapeRange((1, 3, 0, 0), (1, 3, 8, 8), (1, 3, 8, 8))),))
    with pytest.raises(BuildError, match="profile 0: the model does not take its min shapes"):
        build_with_profiles(ModelSource.from_onnx(dynamic_model), [too_small])


def _reshape_by_input_model() -> bytes:
    """Reshape(x, target) with `target` a run-time input: a shape tensor, whose values set the output's shape."""
    nodes = [onnx.helper.make_node("Reshape", ["x", "target"], ["shaped"]),
             onnx.helper.make_node("Relu", ["shaped"], ["y"])]
    graph = onnx.helper.make_graph(nodes, "reshape", [onnx.helper.make_tensor_value_info("x", 1, ["n"]),
                                                      onnx.helper.make_tensor_value_info("target", 7, [2])],
                                   [onnx.helper.make_tensor_value_info("y", 1, None)])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()


def test_shape_tensors_are_bounded_by_the_profile_values():
    model = _reshape_by_input_model()
    [profile] = profiles_from_shape_specs([{"x": (1,), "target": (1, 1)}], [{"x": (6,), "target": (2, 3)}],
                                          [{"x": (64,), "target": (8, 8)}], shape_tensors=["target"])
    engine = Runtime().deserialize(build_with_profiles(ModelSource.from_onnx(model), [profile]).serialize())
    assert [(t.name, t.shape) for t in engine.inputs] == [("x", (-1,)), ("target", (2,))]
    assert engine.get_tensor_profile_values("target", 0) == ((1, 1), (2, 3), (8, 8))
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    context = engine.create_execution_context()
    rng = np.random.default_rng(2)
    for rows, columns in [(2, 3), (3, 4), (8, 8), (1, 2)]:
        feed = {"x": rng.standard_normal(rows * columns, dtype=np.float32), "target": np.array([rows, columns])}
        np.testing.assert_array_equal(context.execute(feed)["y"], session.run(None, feed)[0])
    with pytest.raises(InputError, match=r"shape tensor 'target' with values \[9, 2\] is outside min \[1, 1\]"):
        context.execute({"x": np.ones(18, np.float32), "target": np.array([9, 2])})
    context.set_input_values("target", [4, 5])
    context.set_input_shape("x", (20,))
    assert context.get_tensor_shape("y") == (4, 5)
