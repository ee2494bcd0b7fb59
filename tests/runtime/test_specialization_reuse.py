"""Specializing a new shape reuses what does not depend on the shape (issue 20): the model's initializers are decoded
once per model source, and every specialization's network holds the same (read-only) arrays; its outputs still match
onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest

from tensorkiln.importers.onnx import context as onnx_context
from tensorkiln.limits import ResourceLimits
from tensorkiln.plan.profiles import OptimizationProfile, ShapeRange
from tensorkiln.profile_builder import ModelSource, build_with_profiles

PROFILE = OptimizationProfile((("x", ShapeRange((1, 3, 4, 4), (2, 3, 8, 8), (4, 3, 16, 16))),))


def test_initializers_are_decoded_once_per_source(dynamic_model, monkeypatch):
    decoded = []
    original = onnx_context.tensor_to_array
    monkeypatch.setattr(onnx_context, "tensor_to_array", lambda tensor, what: decoded.append(tensor.name) or
                        original(tensor, what))
    source = ModelSource.from_onnx(dynamic_model)
    first = source.parse({"x": (1, 3, 4, 4)}, ResourceLimits())
    second = source.parse({"x": (3, 3, 5, 9)}, ResourceLimits())
    names = [t.name for t in onnx.load_from_string(dynamic_model).graph.initializer]
    # (Constant nodes' values are decoded by each import: they are small, and may hold shapes)
    assert names and sorted(n for n in decoded if n in names) == sorted(names)  # the second import decoded none
    constants = {t.name: t.value for t in _constants(first)}
    shared = [t for t in _constants(second) if t.name in names]
    assert len(shared) == len(names) and all(t.value is constants[t.name] for t in shared)
    assert not any(t.value.flags.writeable for t in shared)  # shared: a pass writing into one would raise


def _constants(network):
    return [t for layer in network.ir.layers for t in layer.outputs if t.is_constant]


@pytest.mark.parametrize("shape", [(3, 3, 5, 13), (1, 3, 9, 4)])
def test_specializations_from_cached_initializers_match_onnxruntime(dynamic_model, shape):
    engine = build_with_profiles(ModelSource.from_onnx(dynamic_model), [PROFILE], prebuild="opt")
    context = engine.create_execution_context()
    session = onnxruntime.InferenceSession(dynamic_model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(2):  # the second specialization imports from the cached arrays
        x = rng.standard_normal(shape, dtype=np.float32)
        outputs = context.execute({"x": x})
        for name, reference in zip(("tokens", "probs"), session.run(None, {"x": x})):
            np.testing.assert_allclose(outputs[name], reference, rtol=1e-4, atol=1e-5)
        shape = (shape[0] + 1, *shape[1:])
    assert len(engine.specialization_seconds) == 2


def test_specializations_share_their_weights_and_device_copies(dynamic_model):
    engine = build_with_profiles(ModelSource.from_onnx(dynamic_model), [PROFILE], prebuild="opt")
    opt = engine.engine_for(0, {"x": (2, 3, 8, 8)})
    first, second = engine.engine_for(0, {"x": (3, 3, 5, 13)}), engine.engine_for(0, {"x": (1, 3, 9, 4)})
    names = {t.name for t in onnx.load_from_string(dynamic_model).graph.initializer}
    shared = sorted(name for name in first.weights if name in names)
    assert shared and all(first.weights[n] is second.weights[n] is opt.weights[n] for n in shared)
    device = [e.device_weights() for e in (opt, first, second)]
    assert all(device[0][n] is device[1][n] is device[2][n] for n in shared)
    cache = engine.source.weight_cache
    assert cache.hits >= 4 * len(shared)  # each later engine: its weights and their device copies from the cache


def test_a_weight_cache_entry_goes_with_its_source():
    import gc

    from tensorkiln.weight_sharing import WeightCache

    cache = WeightCache()
    array = np.ones(4, np.float32)
    made = cache.derived(array, "fp16", lambda: array.astype(np.float16))
    assert cache.derived(array, "fp16", lambda: pytest.fail("made twice")) is made and len(cache) == 1
    assert cache.derived(array, "fp32", lambda: array.copy()) is not made and len(cache) == 2
    del array
    gc.collect()
    assert len(cache) == 0  # the cache never keeps its sources' derivatives alive alone


def test_weights_a_pass_derives_are_shared_too():
    """Horizontal fusion concatenates sibling weights: under a weight cache, once per set of source arrays."""
    from tensorkiln.builder import Builder
    from tensorkiln.ir import ops
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.network import NetworkDefinition
    from tensorkiln.weight_sharing import WeightCache

    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3)]

    def engine(batch, cache):
        net = NetworkDefinition()
        x = net.add_input("x", DataType.FLOAT, (batch, 8))
        for index, weight in enumerate(weights):  # three products of x: one wide product after fusion
            w = net.add_constant(None, weight, name=f"w{index}").get_output(0)
            product = net.add_matrix_multiply(x, w).get_output(0)
            net.mark_output(net.add_activation(product, ops.ActivationType.TANH).get_output(0))
        return Builder(weight_cache=cache).build(net)

    cache = WeightCache()
    first, second = engine(2, cache), engine(5, cache)
    wide = [name for name, w in first.weights.items() if w.shape == (8, 24)]
    assert wide and all(first.weights[n] is second.weights[n] for n in wide)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    outputs = second.create_execution_context().execute({"x": x})
    for index, name in enumerate(t.name for t in second.outputs):  # in the order they were marked
        np.testing.assert_allclose(outputs[name], np.tanh(x @ weights[index]), rtol=1e-5, atol=1e-5)
    unshared = engine(2, None)
    assert all(unshared.weights[n] is not first.weights[n] for n in wide if n in unshared.weights)


def test_the_engine_file_stores_shared_weights_once_and_loads_them_shared(dynamic_model):
    from tensorkiln.runtime import Runtime

    built = build_with_profiles(ModelSource.from_onnx(dynamic_model), [PROFILE])  # min, opt and max built ahead
    engines = [engine for _, _, engine in built.built_ahead()]
    assert len(engines) == 3
    loaded = Runtime().deserialize(built.serialize())
    names = {t.name for t in onnx.load_from_string(dynamic_model).graph.initializer}
    loaded_engines = [engine for _, _, engine in loaded.built_ahead()]
    for name in set(engines[0].weights) & names:
        assert all(engine.weights[name] is engines[0].weights[name] for engine in engines)
        assert all(engine.weights[name] is loaded_engines[0].weights[name] for engine in loaded_engines)
        np.testing.assert_array_equal(loaded_engines[0].weights[name].numpy(), engines[0].weights[name].numpy())
