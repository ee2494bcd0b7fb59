"""The shared ONNX models with dynamic axes (issue 20): one engine each with an optimization profile, and every
shape in the profile (min, opt, max and one between, which the engine specializes on first use) matches onnxruntime
within 1e-4 on the CPU. Where a model declares a fixed size, the axis is made dynamic in the model first (as a
user re-exporting with dynamic axes would), and onnxruntime runs that same model."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest

from tensorkiln.plan.profiles import OptimizationProfile, ShapeRange
from tensorkiln.profile_builder import ModelSource, build_with_profiles

SILERO_SR = {"sr": np.array(16000, np.int64)}
# name: (model, axes made dynamic, {input: (min, opt, max)}, a shape between, values fixed at build time)
CASES = {
    "ultraface_batch": ("ultraface/version-RFB-320.onnx", {"input": {0: "batch"}},
                        {"input": ((1, 3, 240, 320), (2, 3, 240, 320), (4, 3, 240, 320))},
                        {"input": (3, 3, 240, 320)}, {}),
    "centerface_hw": ("centerface/centerface.onnx", {"input.1": {0: "batch", 2: "height", 3: "width"}},
                      {"input.1": ((1, 3, 32, 32), (1, 3, 256, 256), (2, 3, 480, 640))},
                      {"input.1": (1, 3, 96, 160)}, {}),
    "ppocr_det_hw": ("ppocrv4_det_cls/ch_PP-OCRv4_det_infer.onnx", {},
                     {"x": ((1, 3, 32, 32), (1, 3, 320, 320), (2, 3, 640, 640))}, {"x": (1, 3, 96, 224)}, {}),
    "ppocr_cls_width": ("ppocrv4_det_cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", {},
                        {"x": ((1, 3, 48, 48), (1, 3, 48, 192), (4, 3, 48, 320))}, {"x": (3, 3, 48, 100)}, {}),
    "silero_batch": ("silero_vad/silero_vad_16k_op15.onnx", {},
                     {"input": ((1, 512), (2, 512), (4, 512)), "state": ((2, 1, 128), (2, 2, 128), (2, 4, 128))},
                     {"input": (3, 512), "state": (2, 3, 128)}, SILERO_SR),
}


def _with_dynamic_axes(path, axes: dict) -> bytes:
    model = onnx.load(str(path))
    for value in model.graph.input:
        for axis, name in axes.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = name
    return model.SerializeToString()


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_engine_matches_onnxruntime_at_every_shape_of_its_profile(shared_dir, case):
    path, axes, ranges, between, values = CASES[case]
    model = _with_dynamic_axes(shared_dir / "models/onnx" / path, axes)
    profile = OptimizationProfile(tuple((name, ShapeRange(*bounds)) for name, bounds in ranges.items()))
    engine = build_with_profiles(ModelSource.from_onnx(model, values), [profile])
    context = engine.create_execution_context()
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shapes in [*({name: bounds[k] for name, bounds in ranges.items()} for k in range(3)), between]:
        feed = {name: rng.random(shape, dtype=np.float32) for name, shape in shapes.items()}
        produced = context.execute(feed)
        for (name, value), expected in zip(produced.items(), session.run(None, {**feed, **values})):
            assert value.shape == expected.shape, (name, shapes)
            np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-4, err_msg=f"{name} at {shapes}")
    assert len(engine.specialization_seconds) == 1  # min, opt and max were built ahead; `between` was not
