"""Optimization profiles on the CUDA target (issue 20): FP16 engines of a model exported with dynamic axes, run at
shapes built ahead and specialized, against onnxruntime; a CUDA graph per concrete shape. The CPU side, with
the validation of profiles and files: tests/runtime/test_profiles.py."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from tensorkiln.builder import BuilderConfig, Target
from tensorkiln.plan.profiles import OptimizationProfile, ShapeRange
from tensorkiln.profile_builder import ModelSource, build_with_profiles
from tensorkiln.quant.precision import Precision
from tensorkiln.runtime import Runtime

pytestmark = pytest.mark.gpu


def test_fp16_profiled_engine_matches_onnxruntime_at_every_shape(dynamic_model):
    profile = OptimizationProfile((("x", ShapeRange((1, 3, 4, 4), (4, 3, 16, 16), (8, 3, 32, 32))),))
    config = BuilderConfig(target=Target.CUDA, precision=Precision.FP16)
    engine = Runtime().deserialize(build_with_profiles(ModelSource.from_onnx(dynamic_model), [profile], config)
                                   .serialize())
    context = engine.create_execution_context()
    session = onnxruntime.InferenceSession(dynamic_model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(4, 3, 16, 16), (1, 3, 4, 4), (3, 3, 9, 31), (8, 3, 32, 32), (3, 3, 9, 31)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        outputs = context.execute({"x": x})
        for name, expected in zip(("tokens", "probs"), session.run(None, {"x": x})):
            assert outputs[name].shape == expected.shape
            np.testing.assert_allclose(outputs[name], expected, rtol=2e-2, atol=2e-2)
        inner = context.context_for({"x": shape})
        assert inner._graph is not None  # each concrete shape replays a CUDA graph of its own
    device_input = torch.randn(2, 3, 8, 8, device="cuda")
    result = context.execute_async({"x": device_input})
    torch.cuda.synchronize()
    assert result["tokens"].shape == (2, 64, 8) and result["tokens"].device.type == "cuda"
