"""Dynamic batching on one engine with a batch profile, and model instances.

A batched model.onnx is built once into an engine whose optimization profile spans batch 1..max_batch_size; every
batch the scheduler forms runs on it. Answers must equal direct execution of that engine on the same batch, bit for
bit (tritonclient, HTTP and gRPC); instances must run at the same time."""
from __future__ import annotations

import asyncio
import itertools
import threading
import time

import numpy as np
import pytest

from conftest import ULTRAFACE

import tritonclient.grpc.aio as grpc_aio
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as http_aio

from tensorkiln.serve.config import ModelSettings
from tensorkiln.serve.engines import served_batch_sizes
from tensorkiln.serve.scheduler import Scheduler
from tensorkiln.serve.stats import ModelStats


def test_served_batch_sizes_are_few_and_dense_where_padding_costs_most():
    assert served_batch_sizes(ModelSettings("m", max_batch_size=4)) == (1, 2, 3, 4)
    assert served_batch_sizes(ModelSettings("m", max_batch_size=64, preferred_batch_sizes=(24,))) == (
        1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 32, 64)
    assert served_batch_sizes(ModelSettings("m", max_batch_size=100), smallest=3) == (
        3, 4, 5, 6, 7, 8, 16, 32, 64, 100)


def test_batched_onnx_is_one_engine_with_a_batch_profile(server):
    from tensorkiln.runtime import Runtime

    cache = server.repository / "affine/1/.kiln-cache"
    assert sorted(p.name for p in cache.iterdir()) == ["model.b1-8-8.engine"]  # no engine per batch size
    engine = Runtime().load(cache / "model.b1-8-8.engine")
    assert engine.get_tensor_profile_shape("x", 0) == ((1, 4), (8, 4), (8, 4))


async def _infer_together(module, url, model, arrays, make_input):
    client = module.InferenceServerClient(url)
    try:
        results = await asyncio.gather(*(client.infer(model, [make_input(x)]) for x in arrays))
    finally:
        await client.close()
    return results


def _http_input(x):
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return tensor


def _grpc_input(x):
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


@pytest.mark.skipif(not ULTRAFACE.exists(), reason="needs /work/shared/models (UltraFace)")
def test_batches_of_several_sizes_equal_direct_execution_bit_for_bit(server):
    """Each group of requests is sent at once and forms one batch (the model waits up to 1 s for 4 rows): groups of
    2, 3 and 4 rows. The batch's rows come in arrival order, so each group's answers must equal the direct execution
    of its inputs concatenated in one of the orders they can arrive in."""
    from tensorkiln.runtime import Runtime

    engine = Runtime().load(server.repository / "ultraface_batched/1/.kiln-cache/model.b1-4-4.engine")
    context = engine.create_execution_context()
    rng = np.random.default_rng(7)
    http = httpclient.InferenceServerClient(server.http_url)
    before = http.get_inference_statistics("ultraface_batched")["model_stats"][0]
    groups = [(1, 1), (2, 1), (1, 1, 1, 1), (3, 1)]
    for index, rows in enumerate(groups):
        module, url, make_input = ((http_aio, server.http_url, _http_input) if index % 2 == 0
                                   else (grpc_aio, server.grpc_url, _grpc_input))
        arrays = [rng.random((n, 3, 240, 320), dtype=np.float32) for n in rows]
        results = asyncio.run(_infer_together(module, url, "ultraface_batched", arrays, make_input))
        answers = [{name: r.as_numpy(name) for name in ("scores", "boxes")} for r in results]
        assert any(_matches(context, arrays, answers, order)
                   for order in itertools.permutations(range(len(arrays)))), f"group {rows}: no order matches"
    after = http.get_inference_statistics("ultraface_batched")["model_stats"][0]
    assert after["execution_count"] - before["execution_count"] == len(groups)
    sizes = {entry["batch_size"] for entry in after["batch_stats"]}
    assert {2, 3, 4} <= sizes


def _matches(context, arrays, answers, order) -> bool:
    direct = context.execute({"input": np.concatenate([arrays[i] for i in order])})
    start = 0
    for i in order:
        rows = len(arrays[i])
        if not all(np.array_equal(answers[i][name], direct[name][start:start + rows]) for name in direct):
            return False
        start += rows
    return True


@pytest.mark.skipif(not ULTRAFACE.exists(), reason="needs /work/shared/models (UltraFace)")
def test_input_outside_the_profile_is_refused_alone(server):
    x = np.zeros((1, 3, 240, 321), np.float32)
    with pytest.raises(Exception, match=r"shape \[1, 3, 240, 321\], expected \[-1, 3, 240, 320\]"):
        httpclient.InferenceServerClient(server.http_url).infer("ultraface_batched", [_http_input(x)])


class BarrierEngine:
    """Stands in for an engine: each execution waits until `parties` executions run at the same time."""
    inputs = outputs = ()

    def __init__(self, parties: int):
        self.barrier = threading.Barrier(parties, timeout=10)
        self.threads: set[str] = set()

    def create_execution_context(self):
        return self

    def execute(self, feed):
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()  # breaks (BrokenBarrierError) unless the instances run concurrently
        return {"y": feed["x"] + 1}


def test_instances_run_concurrently_on_threads():
    engine = BarrierEngine(3)
    scheduler = Scheduler(ModelSettings("m", instance_count=3), {0: engine}, ModelStats())
    futures = [scheduler.submit({"x": np.full((2,), i, np.float32)}, 1) for i in range(6)]
    for index, future in enumerate(futures):
        np.testing.assert_array_equal(future.result(20)["y"], np.full((2,), index + 1, np.float32))
    assert len(engine.threads) == 3
    scheduler.close()


class RecordingEngine:
    inputs = outputs = ()

    def __init__(self):
        self.batches: list[tuple[int, ...]] = []

    def create_execution_context(self):
        return self

    def execute(self, feed):
        self.batches.append(feed["x"].shape)
        time.sleep(0.01)
        return {"y": feed["x"] * 2}


def test_requests_of_other_non_batch_dims_are_not_batched_together():
    engine = RecordingEngine()
    settings = ModelSettings("m", max_batch_size=8, dynamic_batching=True, max_queue_delay_us=50_000)
    scheduler = Scheduler(settings, {size: engine for size in range(1, 9)}, ModelStats())
    shapes = [(1, 4), (1, 4), (1, 6), (1, 6), (2, 4)]
    futures = [scheduler.submit({"x": np.ones(shape, np.float32)}, shape[0]) for shape in shapes]
    for shape, future in zip(shapes, futures):
        assert future.result(10)["y"].shape == shape
    assert engine.batches == [(2, 4), (2, 6), (2, 4)]  # in order: a different request ends the batch
    scheduler.close()


def test_pinned_staging_gathers_pads_and_reuses_its_buffers():
    from tensorkiln.serve.scheduler import PinnedStaging

    staging = PinnedStaging(pin=False)  # the gathering; pinned memory needs CUDA (the GPU path: tests/gpu)
    first = staging.stack([{"x": np.full((2, 3), 5, np.float32)}, {"x": np.full((1, 3), 6, np.float32)}], 3, 4)
    np.testing.assert_array_equal(first["x"].numpy(), [[5] * 3, [5] * 3, [6] * 3, [0] * 3])
    second = staging.stack([{"x": np.full((1, 3), 7, np.float32)}], 1, 4)
    assert second["x"].data_ptr() == first["x"].data_ptr()  # reused: no allocation per batch
    np.testing.assert_array_equal(second["x"].numpy(), [[7] * 3, [0] * 3, [0] * 3, [0] * 3])  # old rows cleared
    smaller = staging.stack([{"x": np.full((2, 3), 8, np.float32)}], 2, 2)  # the first rows of the same buffer
    assert smaller["x"].shape == (2, 3) and smaller["x"].data_ptr() == first["x"].data_ptr()
    larger = staging.stack([{"x": np.full((6, 3), 9, np.float32)}], 6, 8)  # a larger batch: a larger buffer
    np.testing.assert_array_equal(larger["x"].numpy(), [[9] * 3] * 6 + [[0] * 3] * 2)
    alone = staging.stack([{"x": np.arange(6, dtype=np.int64).reshape(2, 3)}], 1, 0)
    assert alone["x"].dtype == torch_int64() and alone["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


def torch_int64():
    import torch

    return torch.int64


def _profiled_affine(tmp_path, low: int, high: int):
    """An affine engine file with a batch profile low..high, as `kiln build --minShapes/--maxShapes` writes."""
    import tensorkiln as tk
    from conftest import write_affine
    from tensorkiln.plan.profiles import OptimizationProfile, ShapeRange
    from tensorkiln.profile_builder import ModelSource, build_with_profiles

    write_affine(tmp_path / "source")
    profile = OptimizationProfile((("x", ShapeRange((low, 4), (high, 4), (high, 4))),))
    engine = build_with_profiles(ModelSource.from_onnx(tmp_path / "source/1/model.onnx"), [profile],
                                 tk.BuilderConfig())
    (tmp_path / "served/1").mkdir(parents=True)
    engine.save(tmp_path / "served/1/model.engine")
    return tmp_path / "served"


def test_profiled_model_engine_serves_its_batch_range_and_refuses_a_larger_max_batch_size(tmp_path):
    from tensorkiln.serve.config import parse_settings
    from tensorkiln.serve.engines import engines_for
    from tensorkiln.serve.errors import ServeError
    from tensorkiln.serve.repository import LoadedModel

    model_dir = _profiled_affine(tmp_path, 2, 6)
    settings = parse_settings("max_batch_size: 6 dynamic_batching { }", "served")
    engines = engines_for(model_dir / "1", settings)
    assert sorted(engines) == [2, 3, 4, 5, 6] and len({id(e) for e in engines.values()}) == 1  # 1 row pads to 2
    model = LoadedModel(settings, "1", engines, ModelStats())
    try:
        x = np.arange(4, dtype=np.float32).reshape(1, 4) - 2
        np.testing.assert_array_equal(model.scheduler.submit({"x": x}, 1).result(10)["y"], np.maximum(2 * x + 1, 0))
    finally:
        model.scheduler.close()
    with pytest.raises(ServeError, match="runs batches up to 6 < max_batch_size 8; set max_batch_size to 6"):
        engines_for(model_dir / "1", parse_settings("max_batch_size: 8", "served"))


def test_profiled_model_engine_without_batching_runs_any_shape_of_its_profile(tmp_path):
    from tensorkiln.serve.config import ModelSettings
    from tensorkiln.serve.engines import engines_for
    from tensorkiln.serve.errors import InvalidRequest
    from tensorkiln.serve.repository import LoadedModel

    model_dir = _profiled_affine(tmp_path, 1, 5)
    settings = ModelSettings("served")
    model = LoadedModel(settings, "1", engines_for(model_dir / "1", settings), ModelStats())
    try:
        assert model.inputs[0].shape == (-1, 4)
        for rows in (1, 3, 5):
            x = np.full((rows, 4), rows, np.float32)
            assert model.check_inputs({"x": x}) == 1
            np.testing.assert_array_equal(model.scheduler.submit({"x": x}, 1).result(10)["y"], 2 * x + 1)
        with pytest.raises(InvalidRequest, match=r"shape \[6, 4\], outside \[1, 4\]..\[5, 4\]"):
            model.check_inputs({"x": np.zeros((6, 4), np.float32)})
    finally:
        model.scheduler.close()


class BrokenEngine:
    inputs = outputs = ()

    def create_execution_context(self):
        raise RuntimeError("out of device memory")


def test_an_instance_that_cannot_start_fails_the_load_with_its_reason():
    from tensorkiln.serve.errors import ServeError

    with pytest.raises(ServeError, match="model 'm': an instance could not start: out of device memory"):
        Scheduler(ModelSettings("m", instance_count=2), {0: BrokenEngine()}, ModelStats())


def test_every_served_batch_size_stays_specialized(tmp_path):
    from tensorkiln.serve.config import parse_settings
    from tensorkiln.serve.engines import engines_for

    model_dir = _profiled_affine(tmp_path, 1, 4096)
    preferred = ", ".join(str(100 * k) for k in range(1, 11))
    settings = parse_settings(f"max_batch_size: 4096 dynamic_batching {{ preferred_batch_size: [{preferred}] }}",
                              "served")
    engines = engines_for(model_dir / "1", settings)
    assert len(engines) == 8 + 9 + 10  # 1..8, 16..4096, the preferred sizes: more than the 16 kept by default
    assert next(iter(engines.values())).max_specializations == len(engines)


def test_instance_kind_gpu_and_tensorrt_precision_place_the_build(tmp_path):
    import torch

    from tensorkiln.builder import Target
    from tensorkiln.quant.precision import Precision
    from tensorkiln.serve.config import ConfigError, parse_settings
    from tensorkiln.serve.engines import placed_config
    from tensorkiln.serve.repository import ModelRepository

    gpu = parse_settings('instance_group [{ count: 2 kind: KIND_GPU }] optimization { execution_accelerators { '
                         'gpu_execution_accelerator [{ name: "tensorrt" parameters { key: "precision_mode" '
                         'value: "FP16" } }] } }', "m")
    assert (gpu.device, gpu.precision, gpu.instance_count) == ("cuda", "fp16", 2)
    config = placed_config(gpu)
    assert (config.target, config.precision) == (Target.CUDA, Precision.FP16)
    assert parse_settings("instance_group [{ kind: KIND_CPU }]", "m").device == "cpu"
    with pytest.raises(ConfigError, match="give every group the same kind"):
        parse_settings("instance_group [{ kind: KIND_GPU }, { kind: KIND_CPU }]", "m")
    with pytest.raises(ConfigError, match="precision_mode 'INT8'"):
        parse_settings('optimization { execution_accelerators { gpu_execution_accelerator [{ name: "tensorrt" '
                       'parameters { key: "precision_mode" value: "INT8" } }] } }', "m")
    if not torch.cuda.is_available():  # the load fails with the builder's reason, and the model says it
        from conftest import write_affine

        write_affine(tmp_path / "affine")
        (tmp_path / "affine/config.pbtxt").write_text("max_batch_size: 8 instance_group [{ kind: KIND_GPU }]")
        repository = ModelRepository(tmp_path)
        repository.load_all()
        [entry] = repository.index()
        assert entry["state"] == "UNAVAILABLE" and "CUDA target needs a CUDA device" in entry["reason"]


def test_gpu_warm_ups_exclude_batches_and_each_other():
    from tensorkiln.serve.scheduler import SharedExclusiveLock

    lock = SharedExclusiveLock()
    events: list[str] = []
    first_shared, second_shared = threading.Event(), threading.Event()
    release = threading.Event()

    def batch(name, entered):
        with lock.shared():
            events.append(f"{name} in")
            entered.set()
            release.wait(10)
            events.append(f"{name} out")

    def warm_up():
        with lock.exclusive():
            events.append("warm-up")

    threads = [threading.Thread(target=batch, args=("a", first_shared)),
               threading.Thread(target=batch, args=("b", second_shared))]
    for thread in threads:
        thread.start()
    assert first_shared.wait(10) and second_shared.wait(10)  # two batches at once
    exclusive = threading.Thread(target=warm_up)
    exclusive.start()
    time.sleep(0.05)
    late_entered = threading.Event()
    late = threading.Thread(target=batch, args=("c", late_entered))
    late.start()
    time.sleep(0.05)
    assert "warm-up" not in events and not late_entered.is_set()  # the warm-up waits; it holds new batches back
    release.set()
    for thread in (*threads, exclusive, late):
        thread.join(10)
    assert events.index("warm-up") > max(events.index("a out"), events.index("b out"))
    assert events.index("c in") > events.index("warm-up")


def test_one_instance_gathers_a_batch_while_the_others_wait_for_the_next():
    """Requests arriving one by one within the queue delay form one batch, even with idle instances (an idle one
    once took the second request as the first of a batch of its own: two half batches)."""
    engine = RecordingEngine()
    settings = ModelSettings("m", max_batch_size=8, dynamic_batching=True, preferred_batch_sizes=(4,),
                             max_queue_delay_us=2_000_000, instance_count=3)
    scheduler = Scheduler(settings, {size: engine for size in range(1, 9)}, ModelStats())
    futures = []
    for index in range(6):
        futures.append(scheduler.submit({"x": np.full((1, 2), index, np.float32)}, 1))
        time.sleep(0.02)
    for index, future in enumerate(futures[:4]):
        np.testing.assert_array_equal(future.result(10)["y"], np.full((1, 2), 2 * index, np.float32))
    assert engine.batches[0] == (4, 2)  # the preferred size filled: run at once, not at the deadline
    scheduler.close()  # answers the last two, gathered by the next instance
    assert [future.result(10)["y"][0, 0] for future in futures[4:]] == [8, 10] and engine.batches[1] == (2, 2)
