"""Residual adds in place, end to end through the runtime: a bottleneck block's engine whose convolutions run the
Triton implicit-GEMM tactic, so that plan/in_place.py marks the residual convolution; the execution context's own
loop (free lists, the kernel storing over the residual) must give what the portable kernels give.

Runs on the GPU where there is one (an FP32 CUDA engine), else in Triton's CPU interpreter on a CPU engine with the
same steps (TRITON_INTERPRET=1, set at import by tests/gpu/triton_support.py); without triton it skips.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from triton_support import HAS_CUDA, HAS_TRITON, triton_module

import tensorkiln as tk  # noqa: E402  (after triton_support sets TRITON_INTERPRET)
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation  # noqa: E402
from tensorkiln.plan.in_place import residual_in_place_candidates, residuals_in_place  # noqa: E402
from tensorkiln.plan.memory import plan_memory  # noqa: E402

pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
IGEMM = "triton_igemm_bm64_bn64_bk32_w4_s4"


def _blocks():
    """Two ResNet bottlenecks (1x1, 3x3, 1x1 + residual, ReLU); the second's residual is the first's output."""
    rng = np.random.default_rng(0)
    network = tk.NetworkDefinition("blocks")
    x = network.add_input("x", tk.DataType.FLOAT, (2, 16, 7, 5))

    def conv(t, channels_out, kernel, name, relu=True):
        weight = rng.standard_normal((channels_out, t.shape[1], kernel, kernel)) / np.sqrt(t.shape[1] * kernel ** 2)
        out = network.add_convolution(t, channels_out, (kernel, kernel), weight, bias=rng.standard_normal(channels_out),
                                      padding=kernel // 2, name=name).get_output(0)
        return network.add_activation(out, ActivationType.RELU, name=f"{name}_relu").get_output(0) if relu else out

    y = conv(x, 16, 1, "stem")
    for block in range(2):
        inner = conv(conv(y, 8, 1, f"b{block}_1"), 8, 3, f"b{block}_2")
        added = network.add_elementwise(conv(inner, 16, 1, f"b{block}_3", relu=False), y, ElementWiseOperation.SUM,
                                        name=f"b{block}_add").get_output(0)
        y = network.add_activation(added, ActivationType.RELU, name=f"b{block}_out").get_output(0)
    network.mark_output(network.add_pooling(y, tk.PoolingType.AVERAGE, (7, 5), name="pool").get_output(0))
    return network


def test_convolutions_storing_over_their_residual_give_the_portable_result(monkeypatch):
    conv_module = triton_module("conv")
    stored_over = []

    def recording_buffer(shape, dtype, device, memory_format=torch.contiguous_format, residual=None,
                         over_residual=False):
        out = output_buffer(shape, dtype, device, memory_format, residual, over_residual)
        stored_over.append(residual is not None and out.data_ptr() == residual.data_ptr())
        return out

    output_buffer = conv_module.output_buffer
    monkeypatch.setattr(conv_module, "output_buffer", recording_buffer)
    target = tk.Target.CUDA if HAS_CUDA else tk.Target.CPU
    if not HAS_CUDA:  # the interpreter runs the CUDA tactic in a CPU engine, which a loaded engine may never do
        from tensorkiln.runtime import context as context_module
        from tensorkiln.tactics import selection
        monkeypatch.setattr(context_module, "kernel_for_tactic",
                            lambda tactic, _target: selection.kernel_for_tactic(tactic, tactic.split(".")[0]))
    engine = tk.Builder(tk.BuilderConfig(target=target, opt_level=0)).build(_blocks())
    plan = engine.plan
    steps = [dataclasses.replace(s, tactic=f"cuda.{s.kind}.{IGEMM}") if s.kind == "fused_convolution" else s
             for s in plan.steps]
    convolutions = [s for s in steps if s.kind == "fused_convolution"]
    outside = {t.name for t in plan.outputs}
    steps = residuals_in_place(steps, residual_in_place_candidates(steps, plan.tensors, outside))
    marked = [s.name for s in steps if getattr(s.op, "residual_in_place", False)]
    assert len(marked) == 2, marked  # each block's last convolution
    plan = dataclasses.replace(plan, steps=tuple(steps), memory=plan_memory(steps, plan.tensors, outside))
    triton_engine = tk.Engine(plan, engine.weights)
    x = np.random.default_rng(1).standard_normal((2, 16, 7, 5), dtype=np.float32)
    expected = tk.Builder().build(_blocks()).create_execution_context().execute({"x": x})  # CPU, portable kernels
    contexts = [triton_engine.create_execution_context(cuda_graph=False)]
    contexts.append(triton_engine.create_execution_context() if HAS_CUDA
                    else triton_engine.create_execution_context(use_arena=True))  # graph replay / planned arena
    for context in contexts:
        for _ in range(2):  # a second run must not see the first one's overwritten residuals
            stored_over.clear()
            got = context.execute({"x": x})
            for name, value in expected.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4)
            # every pass of the steps (a graph's warm-up and capture are two; a replay launches none from Python)
            # stores over the residual in exactly the two marked convolutions
            passes, rest = divmod(len(stored_over), len(convolutions))
            assert rest == 0 and stored_over.count(True) == 2 * passes, stored_over
