"""An ExecutionContext shared by threads serializes its executions: every result equals the single-threaded one
(issue 18: with use_arena=True, two threads sharing a context got 186 wrong results of 200, with no error)."""
from __future__ import annotations

import functools
import threading

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation

THREADS = 4
RUNS_PER_THREAD = 10


@functools.cache
def _engine(target: str):
    """Several steps whose activations share arena bytes, so that overlapping executions overwrite each other."""
    network = tk.NetworkDefinition("chain")
    x = network.add_input("x", tk.DataType.FLOAT, (16, 128))
    weights = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32) / 11
    tensor = x
    for index in range(6):
        kernel = network.add_constant((128, 128), weights, name=f"w{index}").get_output(0)
        tensor = network.add_matrix_multiply(tensor, kernel).get_output(0)
        tensor = network.add_activation(tensor, ActivationType.TANH).get_output(0)
        tensor = network.add_elementwise(tensor, x, ElementWiseOperation.SUM).get_output(0)
    network.mark_output(tensor)
    return tk.Builder(tk.BuilderConfig(target=tk.Target(target))).build(network)


@pytest.mark.parametrize("target, use_arena", [("cpu", True), ("cpu", False),
                                               pytest.param("cuda", False, marks=pytest.mark.gpu)],
                         ids=["cpu_arena", "cpu", "cuda_graph"])
def test_threads_sharing_a_context_get_the_single_threaded_results(target, use_arena):
    """Failed before the fix with use_arena=True (the threads wrote over each other's activations); on CUDA the
    threads share the context's graph and its static buffers."""
    engine = _engine(target)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((16, 128)).astype(np.float32)} for _ in range(THREADS * RUNS_PER_THREAD)]
    reference = engine.create_execution_context(use_arena=use_arena)
    expected = [next(iter(reference.execute(feed).values())) for feed in feeds]
    shared = engine.create_execution_context(use_arena=use_arena)
    results: list = [None] * len(feeds)
    start = threading.Barrier(THREADS)

    def hammer(first: int) -> None:
        start.wait()
        for index in range(first, len(feeds), THREADS):
            results[index] = next(iter(shared.execute(feeds[index]).values()))

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wrong = sum(not np.array_equal(got, want) for got, want in zip(results, expected))
    assert wrong == 0, f"{wrong} of {len(feeds)} results differ from the single-threaded ones"
