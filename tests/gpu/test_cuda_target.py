"""The CUDA target: every layer kind on the GPU against the CPU reference, FP16/BF16, CUDA graphs, streams,
several contexts, and the architecture check of engine files. Skipped where no CUDA device is present."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.builder import BuilderConfig, Target
from tensorkiln.errors import EngineFormatError
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.plan.file_format import serialize
from tensorkiln.tactics.check import layerwise_errors
from tensorkiln.quant.precision import Precision

pytestmark = pytest.mark.gpu

# relative tolerance (max |out - ref| over max |ref|) per precision, for one layer's result from the same inputs
TOLERANCE = {Precision.FP32: 1e-4, Precision.TF32: 5e-3, Precision.FP16: 1e-2, Precision.BF16: 4e-2}
# ... and for a whole network against onnxruntime's FP32 outputs: reduced precision drifts over a deep network. On an
# H100, CenterFace's landmark output (values ~0.1) is 2.1e-2 off in FP16 while no layer is more than 1.7e-3 off
# (the layer-wise check in test_real_models_on_cuda); BF16 keeps 3 fewer mantissa bits than FP16 (8x the rounding).
END_TO_END = {Precision.FP32: 1e-4, Precision.TF32: 5e-3, Precision.FP16: 5e-2, Precision.BF16: 2e-1}

MODELS = [
    ("ultraface/version-RFB-320.onnx", "ultraface/reference_version-RFB-320.npz"),
    ("centerface/centerface.onnx", "centerface/reference.npz"),
    ("mtcnn_keras2onnx/onet.onnx", "mtcnn_keras2onnx/reference_onet.npz"),
    ("ppocrv4_det_cls/ch_PP-OCRv4_det_infer.onnx", "ppocrv4_det_cls/reference_det.npz"),
]


def _reference(path):
    data = np.load(path)
    return ({k[6:]: data[k] for k in data.files if k.startswith("input:")},
            {k[7:]: data[k] for k in data.files if k.startswith("output:")})


def _relative_error(out, ref) -> float:
    return float(np.max(np.abs(out.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-12))


# PP-OCRv4 det ends in a sigmoid over logits in the tens: on an H100 its FP16 probability map is 6.7e-2 off (BF16
# 0.37) although every layer is within the layer-wise tolerance; keeping its head in FP32 (layer_precisions) is the
# fix to try. Not strict: the tactics the timer picks, and so the drift, vary from build to build.
_SIGMOID_HEAD = pytest.mark.xfail(strict=False, reason="PP-OCRv4 det's sigmoid head amplifies reduced-precision drift")
REAL_MODEL_CASES = [pytest.param(model, reference, precision, id=f"{model}-{precision.value}",
                                 marks=_SIGMOID_HEAD if "PP-OCR" in model and precision in (Precision.FP16,
                                                                                            Precision.BF16) else ())
                    for model, reference in MODELS for precision in (Precision.FP32, Precision.FP16, Precision.BF16)]


@pytest.mark.parametrize("model_file, reference_file, precision", REAL_MODEL_CASES)
def test_real_models_on_cuda(shared_dir, model_file, reference_file, precision):
    inputs, expected = _reference(shared_dir / "models/onnx" / reference_file)
    network = parse_onnx(shared_dir / "models/onnx" / model_file, input_shapes={k: v.shape for k, v in inputs.items()})
    # opt level 2 times one config of each Triton kernel: every tactic family is still in play, the build is faster
    engine = tk.Builder(BuilderConfig(target=Target.CUDA, precision=precision, opt_level=2)).build(network)
    engine = tk.Runtime().deserialize(engine.serialize())
    assert engine.plan.device_name == torch.cuda.get_device_name()
    # first each step's tactic against the portable kernel in FP32 on the engine's own activations: a wrong kernel
    # shows here as one large error, where the comparison below only sees the sum of every layer's rounding
    worst = max(layerwise_errors(engine, inputs), key=lambda e: e.error)
    assert worst.error <= TOLERANCE[precision], worst
    for graph in (False, True):
        outputs = engine.create_execution_context(cuda_graph=graph).execute(inputs)
        for name, ref in expected.items():
            assert _relative_error(outputs[name], ref) <= END_TO_END[precision], (name, graph)


def test_centerface_with_forwarded_residual_biases_in_fp16(shared_dir):
    # forward_residual_bias makes the residual stream carry each projection's bias, values up to 1.9x larger on
    # CenterFace: its FP16 outputs must stay within the tolerance the other real models meet
    inputs, expected = _reference(shared_dir / "models/onnx/centerface/reference.npz")
    network = parse_onnx(shared_dir / "models/onnx/centerface/centerface.onnx",
                         input_shapes={k: v.shape for k, v in inputs.items()})
    config = BuilderConfig(target=Target.CUDA, precision=Precision.FP16, opt_level=2)
    engine = tk.Builder(config).build(network)
    assert engine.plan.build_info["pass_counts"]["forward_residual_bias.forwarded"] == 15
    outputs = engine.create_execution_context().execute(inputs)
    for name, ref in expected.items():
        assert _relative_error(outputs[name], ref) <= END_TO_END[Precision.FP16], name


def test_graph_replay_tracks_new_inputs_and_streams(shared_dir):
    inputs, _ = _reference(shared_dir / "models/onnx/ultraface/reference_version-RFB-320.npz")
    network = parse_onnx(shared_dir / "models/onnx/ultraface/version-RFB-320.onnx")
    engine = tk.Builder(BuilderConfig(target=Target.CUDA, precision=Precision.FP16)).build(network)
    eager, graphed = engine.create_execution_context(cuda_graph=False), engine.create_execution_context()
    rng = np.random.default_rng(0)
    stream = torch.cuda.Stream()
    for _ in range(3):
        feed = {"input": torch.from_numpy(rng.standard_normal((1, 3, 240, 320), dtype=np.float32)).cuda()}
        expected = eager.execute(feed)
        produced = graphed.execute_async(feed, stream)
        stream.synchronize()
        for name in expected:
            torch.testing.assert_close(produced[name], expected[name], rtol=0, atol=1e-3)
    # the graph holds the FP32 input as the FP16 its convolutions read, channels-last: one copy in, no cast kernel
    held = graphed._static_inputs["input"]
    assert held.dtype == torch.float16 and held.is_contiguous(memory_format=torch.channels_last)


def test_bound_inputs_are_read_in_place_by_the_graph():
    # set_input_tensor: the graph reads the bound FP32 NCHW tensor, converting it to FP16 channels-last inside
    # the graph; new data written into it is seen, another bound tensor recaptures, and copy mode still works
    rng = np.random.default_rng(0)
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (1, 8, 16, 16))
    conv = network.add_convolution(x, 16, (3, 3), rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.1,
                                   rng.standard_normal(16).astype(np.float32), padding=1, name="conv")
    network.mark_output(network.add_activation(conv.get_output(0), tk.ActivationType.RELU).get_output(0))
    engine = tk.Builder(BuilderConfig(target=Target.CUDA, precision=Precision.FP16)).build(network)
    eager, graphed = engine.create_execution_context(cuda_graph=False), engine.create_execution_context()

    def check(produced, value):
        expected = eager.execute({"x": value})
        for name in expected:
            torch.testing.assert_close(produced[name], expected[name], rtol=0, atol=1e-3)

    bound = torch.randn(1, 8, 16, 16, device="cuda")
    graphed.set_input_tensor("x", bound)
    check(graphed.execute_async(), bound)
    first_graph = graphed._graph
    bound.copy_(torch.randn_like(bound))  # the next request, written where the graph reads it
    check(graphed.execute_async(), bound)
    assert graphed._graph is first_graph and not graphed._static_inputs  # replayed, nothing copied in
    other = torch.randn(1, 8, 16, 16, device="cuda")
    graphed.set_input_tensor("x", other)
    check(graphed.execute(), other)
    assert graphed._graph is not first_graph  # captured again for the new address
    fed = torch.randn(1, 8, 16, 16, device="cuda")
    check(graphed.execute_async({"x": fed}), fed)  # copy mode: its own graph
    check(graphed.execute_async(), other)


def test_graph_input_memory_is_released_after_its_last_reader():
    # x -> softmax -> a -> softmax -> b -> mean: the graph's input buffer lives in its memory pool and is released
    # after the first softmax, so two 64 MiB activations are alive at a time (x and a, then a and b), not three
    network = tk.NetworkDefinition()
    shape = (8, 128, 128, 128)  # 64 MiB in FP32
    unit = int(np.prod(shape)) * 4
    t = network.add_input("x", tk.DataType.FLOAT, shape)
    for name in ("a", "b"):
        t = network.add_softmax(t, axis=-1, name=name).get_output(0)
    network.mark_output(network.add_reduce(t, tk.ReduceOperation.MEAN, (2, 3), name="mean").get_output(0))
    engine = tk.Builder(BuilderConfig(target=Target.CUDA)).build(network)
    eager, graphed = engine.create_execution_context(cuda_graph=False), engine.create_execution_context()
    feeds = [{"x": torch.randn(shape, device="cuda")} for _ in range(2)]
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    first = graphed.execute_async(feeds[0])  # warm-up, capture, replay; the outputs are the graph's own buffers
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - held
    assert peak < 2.5 * unit, f"peak {peak / 2**20:.0f} MiB: the input buffer was held beside both activations"
    for feed, produced in ((feeds[0], {k: v.clone() for k, v in first.items()}), (feeds[1], graphed.execute(feeds[1]))):
        torch.testing.assert_close(next(iter(produced.values())), next(iter(eager.execute(feed).values())),
                                   rtol=1e-5, atol=1e-6)


def test_foreign_architecture_is_refused():
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (2, 3))
    network.mark_output(network.add_activation(x, tk.ActivationType.RELU).get_output(0))
    engine = tk.Builder(BuilderConfig(target=Target.CUDA)).build(network)
    foreign = dataclasses.replace(engine.plan, compute_capability="7.0", device_name="Tesla V100")
    blob = serialize(foreign, engine.weights)  # not through tk.Engine: constructing one checks the device too
    with pytest.raises(EngineFormatError, match="compute capability 7.0.*rebuild"):
        tk.Runtime().deserialize(blob)


def test_overflowing_layer_stays_fp32():
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (4, 8))
    big = network.add_scale(x, tk.ScaleMode.UNIFORM, scale=np.array([1e6], np.float32), name="huge").get_output(0)
    small = network.add_scale(big, tk.ScaleMode.UNIFORM, scale=np.array([1e-6], np.float32), name="back")
    network.mark_output(small.get_output(0))
    builder = tk.Builder(BuilderConfig(target=Target.CUDA, precision=Precision.FP16, passes=("fold_constants",)))
    engine = builder.build(network)
    assert {s.name: s.precision for s in engine.plan.steps}["huge"] == "fp32"
    assert any("huge: kept in fp32" in line for line in builder.build_log)
    value = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    out = engine.create_execution_context().execute({"x": value})
    np.testing.assert_allclose(next(iter(out.values())), value, rtol=2e-3, atol=1e-3)


@pytest.mark.timing
def test_layer_profile_adds_up_to_the_graph_latency(shared_dir):
    # per-layer GPU times, each step timed inside a CUDA graph as the engine runs it: their sum is the engine's
    # latency give or take the gaps between kernels, not dominated by per-layer launch overhead
    inputs, _ = _reference(shared_dir / "models/onnx/ultraface/reference_version-RFB-320.npz")
    network = parse_onnx(shared_dir / "models/onnx/ultraface/version-RFB-320.onnx")
    engine = tk.Builder(BuilderConfig(target=Target.CUDA, precision=Precision.FP16)).build(network)
    context = engine.create_execution_context()
    feed = {name: torch.from_numpy(value).cuda() for name, value in inputs.items()}
    context.execute(feed)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        context.execute_async(feed)
    end.record()
    end.synchronize()
    latency_s = start.elapsed_time(end) / 20 / 1e3
    profile = context.profile(feed, runs=5)
    assert [name for name, *_ in profile] == [step.name for step in engine.plan.steps]
    assert all(seconds > 0 for *_, seconds in profile)
    assert 0.3 * latency_s <= sum(seconds for *_, seconds in profile) <= 2.0 * latency_s
