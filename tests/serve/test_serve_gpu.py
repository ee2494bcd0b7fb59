"""kiln serve's GPU path (runs where CUDA is present; the lead's H200): a batched model.onnx of instance kind
KIND_GPU built into one CUDA engine with a batch profile, two instances, each running on a CUDA stream of its own
(not the default stream), batches gathered in pinned memory; answers equal to direct execution, bit for bit."""
from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest

from conftest import affine_reference, write_affine

pytestmark = pytest.mark.gpu


class StreamSpy:
    """An engine (or context) that forwards everything, recording the current CUDA stream of each execution."""

    def __init__(self, inner, seen: list):
        self._inner, self._seen = inner, seen

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def create_execution_context(self, **options):
        return StreamSpy(self._inner.create_execution_context(**options), self._seen)

    def execute(self, feed):
        import torch

        self._seen.append((threading.current_thread().name, torch.cuda.current_stream().cuda_stream,
                           {name: (value.device.type, value.is_pinned()) for name, value in feed.items()}))
        return self._inner.execute(feed)


def test_instances_on_their_own_streams_with_pinned_batches(tmp_path):
    import torch

    from tensorkiln.serve.config import read_settings
    from tensorkiln.serve.engines import engines_for
    from tensorkiln.serve.scheduler import Scheduler
    from tensorkiln.serve.stats import ModelStats

    write_affine(tmp_path / "affine")
    config = tmp_path / "affine/config.pbtxt"  # max_batch_size 8, two instances, now of kind KIND_GPU
    config.write_text(config.read_text().replace("count: 2", "count: 2 kind: KIND_GPU"))
    settings = read_settings(tmp_path / "affine")
    assert settings.device == "cuda"
    engines = engines_for(tmp_path / "affine/1", settings)
    engine = next(iter(engines.values()))
    assert engine.device.type == "cuda" and hasattr(engine, "num_optimization_profiles")
    seen: list = []
    spy = StreamSpy(engine, seen)
    stats = ModelStats()
    scheduler = Scheduler(settings, {size: spy for size in engines}, stats)
    xs = [np.random.default_rng(i).standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(64)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda x: scheduler.submit({"x": x}, len(x)), xs))
    for x, future in zip(xs, futures):
        np.testing.assert_array_equal(future.result(60)["y"], affine_reference(x))
    scheduler.close()
    default = torch.cuda.default_stream().cuda_stream
    streams_by_thread: dict[str, set] = {}
    for thread, stream, inputs in seen:
        streams_by_thread.setdefault(thread, set()).add(stream)
        assert all(value == ("cpu", True) for value in inputs.values())  # pinned host memory
    assert len(streams_by_thread) == 2
    streams = [s for found in streams_by_thread.values() for s in found]
    assert all(len(found) == 1 for found in streams_by_thread.values()) and len(set(streams)) == 2
    assert default not in streams
    assert len(stats.snapshot()["batch_sizes"]) > 1  # batches of several sizes formed


def test_inline_run_on_the_lent_instances_stream(tmp_path):
    """A model without dynamic batching, idle: a request runs on the caller's thread, on the lent instance's own
    stream (not the caller's default one), from pinned memory; answers bit for bit."""
    import torch

    from tensorkiln.serve.config import read_settings
    from tensorkiln.serve.engines import engines_for
    from tensorkiln.serve.scheduler import Scheduler
    from tensorkiln.serve.stats import ModelStats

    write_affine(tmp_path / "affine")
    (tmp_path / "affine/config.pbtxt").write_text("max_batch_size: 8 instance_group [{ count: 1 kind: KIND_GPU }]")
    settings = read_settings(tmp_path / "affine")
    engines = engines_for(tmp_path / "affine/1", settings)
    seen: list = []
    spy = StreamSpy(next(iter(engines.values())), seen)
    scheduler = Scheduler(settings, {size: spy for size in engines}, ModelStats())
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(scheduler.submit({"x": x}, 3).result(60)["y"], affine_reference(x))
    while scheduler.pending:  # the instance counts itself free after answering
        pass
    queued_thread, queued_stream, _ = seen[-1]
    future = scheduler.submit({"x": x}, 3, inline=True)
    assert future.done()
    np.testing.assert_array_equal(future.result()["y"], affine_reference(x))
    thread, stream, inputs = seen[-1]
    assert thread == threading.current_thread().name != queued_thread
    assert stream == queued_stream != torch.cuda.default_stream().cuda_stream
    assert all(value == ("cpu", True) for value in inputs.values())
    assert torch.cuda.current_stream().cuda_stream == torch.cuda.default_stream().cuda_stream  # restored
    scheduler.close()
