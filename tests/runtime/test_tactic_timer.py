"""The tactic timer's compile-ahead step (tactics/timing.py), on the CPU with stand-in tactics: which tactics it
launches, how often, and that a failing one does not stop the build."""
from __future__ import annotations

import threading

import torch

from tensorkiln.ir import ops
from tensorkiln.ir.dtypes import DataType
from tensorkiln.ir.graph import Layer, Tensor
from tensorkiln.kernels.registry import KernelEntry
from tensorkiln.tactics.timing import TacticTimer, TimingCache


def test_compile_ahead_launches_each_generated_tactic_once_per_timing_key_in_threads():
    launches, threads = [], set()

    def tactic(impl):
        def run(op, inputs):
            threads.add(threading.get_ident())
            launches.append((impl, tuple(inputs[0].shape), op.residual_in_place))
            if impl == "triton_broken":
                raise RuntimeError("a compile error")
            return [inputs[0]]
        return KernelEntry("fused_convolution", "cuda", impl, run, writes_over_residual=impl == "triton_over")

    entries = [tactic(impl) for impl in ("cudnn_fused", "triton_igemm_a", "triton_over", "triton_broken")]
    conv = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True)

    def layer(name, size):
        spec = Tensor(name, DataType.FLOAT, (1, 4, size, size))
        return Layer(name, conv, [spec, Tensor("w", DataType.FLOAT, (4, 4, 1, 1)), None, spec], [spec])

    timer = TacticTimer(torch.device("cpu"), torch.float32, TimingCache())
    timer.cache.entries[timer._timed(layer("c", 6), entries[1], False)[1]] = 1.0  # timed by an earlier build
    # two layers of one shape share their timing keys; the third is stored over its residual
    timer.compile_ahead([(layer("a", 5), entries, False), (layer("b", 5), entries, False),
                         (layer("c", 6), entries, True)])
    assert sorted(launches) == sorted([("triton_igemm_a", (1, 4, 5, 5), False), ("triton_over", (1, 4, 5, 5), False),
                                       ("triton_broken", (1, 4, 5, 5), False), ("triton_over", (1, 4, 6, 6), True),
                                       ("triton_broken", (1, 4, 6, 6), False)])
    assert timer.ahead[0] == 5 and "compiling 5 generated tactics ahead" in timer.summary()
    assert threading.get_ident() not in threads  # the pool's threads ran them


def test_cpu_candidates_are_timed_in_turns_on_the_threads_the_layer_runs_on():
    calls = []

    def tactic(impl):
        def run(op, inputs):
            calls.append((impl, torch.get_num_threads()))
            return [inputs[0]]
        return KernelEntry("fused_convolution", "cpu", impl, run)

    def layer(name, channels, size):  # a 1x1 convolution of channels x channels at size x size
        x = Tensor(name, DataType.FLOAT, (1, channels, size, size))
        conv = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1)
        return Layer(name, conv, [x, Tensor("w", DataType.FLOAT, (channels, channels, 1, 1))], [x])

    entries = [tactic("torch"), tactic("torch_direct")]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        timer = TacticTimer(torch.device("cpu"), torch.float32, TimingCache(), runs=6)
        timer(layer("small", 8, 9), entries)  # 5,184 multiply-adds: runs on one thread
        warmed = calls[4:]  # two warm-up launches of each first
        assert [impl for impl, _ in warmed] == ["torch", "torch_direct"] * 6
        assert {threads for _, threads in calls} == {1}
        assert timer.cache.misses == 2 and len(timer.cache.entries) == 2
        calls.clear()
        timer(layer("large", 512, 128), entries)  # 4.3 G multiply-adds: on the context's two threads
        assert {threads for _, threads in calls} == {2}
        assert torch.get_num_threads() == 2
        calls.clear()
        timer(layer("small_again", 8, 9), entries)  # same shapes: from the cache, nothing launched
        assert calls == [] and timer.cache.hits == 2
    finally:
        torch.set_num_threads(before)
