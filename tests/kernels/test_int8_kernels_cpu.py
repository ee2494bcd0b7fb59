"""The INT8 tactics of the CUDA target (kernels/cuda/int8.py, kernels/cuda/triton/int8_gemm.py) on the CPU, against
the float reference of the layer they serve: the portable kernel on the same INT8-grid input and the weights
dequantized (what the simulated INT8 path computes). The cuBLASLt tactics are plain PyTorch (torch._int_mm has a CPU
kernel); the Triton kernel runs in Triton's interpreter. Also: the quantization pass attaches the integer operands
exactly, the engine reader's checks of them, and a whole quantized network run with the integer tactics.
The same kernels on a GPU: tests/gpu/test_int8_kernels.py.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
if HAS_TRITON and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton.jit decorates the kernels (see tests/gpu/triton_support.py)

import tensorkiln as tk  # noqa: E402
from tensorkiln.ir import ops  # noqa: E402
from tensorkiln.ir.dtypes import DataType  # noqa: E402
from tensorkiln.ir.ops import ActivationType as A  # noqa: E402
from tensorkiln.kernels.cuda import int8 as int8_tactics  # noqa: E402
from tensorkiln.kernels.cuda.triton.configs import GemmConfig, TmaGemmConfig  # noqa: E402
from tensorkiln.kernels.registry import find_kernel, get_kernel  # noqa: E402
from tensorkiln.passes.fuse_pointwise import FusePointwise  # noqa: E402
from tensorkiln.passes.manager import DEFAULT_PIPELINE, PassManager  # noqa: E402
from tensorkiln.passes.quantize_int8 import QuantizeInt8  # noqa: E402
from tensorkiln.plan.op_checks import check_op  # noqa: E402
from tensorkiln.plan.plan import TensorSpec  # noqa: E402
from tensorkiln.plan.schema import PlanProblem  # noqa: E402
from tensorkiln.quant.calibrate import calibrate  # noqa: E402
from tensorkiln.quant.calibrator import DataCalibrator  # noqa: E402
from tensorkiln.quant.int8 import Int8Options  # noqa: E402
from tensorkiln.quant.observe import NetworkRunner  # noqa: E402
from tensorkiln.quant.weights import quantize_weights  # noqa: E402

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
TOLERANCE = 1e-5  # FP32: the integer product is exact; only the float epilogue rounds
INPUT_SCALE = 0.037


def _spec(tensor: torch.Tensor, name: str = "t") -> TensorSpec:
    return TensorSpec(name, DataType.from_torch(tensor.dtype), tuple(tensor.shape))


def _conv_operands(rng, n, c, h, w, k, r, s, residual_shape=None, prelu=False):
    """Inputs of a quantized fused convolution: x on the INT8 grid (channels-last), float weights = INT8 values x
    per-channel scales, bias, residual, PReLU slope, the INT8 weights [K, R, S, C] and their scales as int32 bits."""
    x = (torch.from_numpy(rng.integers(-128, 128, (n, c, h, w))).float() * INPUT_SCALE)
    weights = rng.standard_normal((k, c, r, s)).astype(np.float32)
    q, scales = quantize_weights(weights, 0)
    float_weights = torch.from_numpy(q.astype(np.float32) * scales.reshape(-1, 1, 1, 1))
    bias = torch.from_numpy(rng.standard_normal(k).astype(np.float32))
    residual = None if residual_shape is None else torch.from_numpy(rng.standard_normal(residual_shape)
                                                                    .astype(np.float32))
    slope = torch.from_numpy(rng.uniform(0, 0.5, (k, 1, 1)).astype(np.float32)) if prelu else None
    return [x.contiguous(memory_format=torch.channels_last), float_weights, bias, residual, slope,
            torch.from_numpy(np.ascontiguousarray(q.transpose(0, 2, 3, 1))),
            torch.from_numpy(scales.view(np.int32))]


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    return (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)


# awkward shapes: primes, 1, sizes no tile divides; (n, c, h, w, k, r, s, stride, pads, dilation)
CONV_CASES = [
    (2, 16, 9, 7, 24, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),  # 1x1
    (1, 8, 13, 11, 16, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),  # strided 1x1 (a ResNet downsample), odd sizes
    (2, 8, 9, 9, 16, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),  # strided 3x3
    (1, 8, 11, 10, 8, 3, 2, (1, 2), (2, 0, 1, 1), (2, 1)),  # asymmetric pads, dilation
]
EPILOGUES = [  # (op fields, residual, prelu)
    (dict(activation=A.RELU), False, False),
    (dict(residual=True, post_activation=A.RELU), True, False),
    (dict(prelu=True, residual=True), True, True),
    (dict(activation=A.CLIP, alpha=-0.5, beta=2.0, post_activation=A.SILU, residual=True), True, False),
]


def _conv_case(case, epilogue):
    n, c, h, w, k, r, s, stride, pads, dilation = case
    fields, with_residual, prelu = epilogue
    op = ops.FusedConvolution(stride, pads, dilation, int8_input_scale=INPUT_SCALE, **fields)
    p = (h + pads[0] + pads[2] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + pads[1] + pads[3] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    inputs = _conv_operands(np.random.default_rng(sum(case[:7])), n, c, h, w, k, r, s,
                            (n, k, p, q) if with_residual else None, prelu)
    return op, inputs


def _conv_tactic(op, inputs):
    pointwise = int8_tactics._is_pointwise(op, inputs[5].shape)
    return int8_tactics.int8_pointwise_convolution if pointwise else int8_tactics.int8_im2col_convolution


@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_cublaslt_int8_convolution_matches_float_reference(case, epilogue):
    op, inputs = _conv_case(case, epilogue)
    specs = [None if t is None else _spec(t) for t in inputs]
    assert int8_tactics._cublas_pointwise_ok(op, specs) or int8_tactics._cublas_im2col_ok(op, specs)
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    out = _conv_tactic(op, inputs)(op, inputs)[0]
    assert out.is_contiguous(memory_format=torch.channels_last)  # NHWC engines hold channels-last activations
    assert _relative_error(out, reference) <= TOLERANCE


@needs_triton
@pytest.mark.parametrize("epilogue", EPILOGUES[1:3])
@pytest.mark.parametrize("case", CONV_CASES + [(1, 3, 7, 6, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1))])
def test_triton_int8_convolution_matches_float_reference(case, epilogue):
    op, inputs = _conv_case(case, epilogue)
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    config = int8_tactics.TRITON_CONFIGS[-1]
    out = int8_tactics.triton_int8_convolution(op, inputs, config)[0]
    assert _relative_error(out, reference) <= TOLERANCE


def _matmul_case(rows_shape, k, n, fields, seed=0):
    rng = np.random.default_rng(seed)
    a = torch.from_numpy(rng.integers(-128, 128, (*rows_shape, k))).float() * INPUT_SCALE
    b = rng.standard_normal((n, k)).astype(np.float32)  # transpose_b: a fully connected layer's [N, K]
    q, scales = quantize_weights(b, 0)
    residual = torch.randn(*rows_shape, n, generator=torch.Generator().manual_seed(seed)) \
        if fields.get("residual") else None
    op = ops.FusedMatMul(transpose_b=True, int8_input_scale=INPUT_SCALE, **fields)
    inputs = [a, torch.from_numpy(q.astype(np.float32) * scales[:, None]),
              torch.from_numpy(rng.standard_normal(n).astype(np.float32)), residual, None,
              torch.from_numpy(q), torch.from_numpy(scales.view(np.int32))]
    return op, inputs


MATMUL_CASES = [((17,), 8, 8, dict(activation=A.GELU_ERF)), ((3, 7), 40, 24, dict(residual=True)),
                ((2, 13), 16, 32, dict(activation=A.TANH, residual=True, post_activation=A.RELU))]


@pytest.mark.parametrize("rows, k, n, fields", MATMUL_CASES)
def test_int8_gemm_tactics_match_float_reference(rows, k, n, fields):
    op, inputs = _matmul_case(rows, k, n, fields)
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    assert int8_tactics._cublas_matmul_ok(op, [None if t is None else _spec(t) for t in inputs])
    assert _relative_error(int8_tactics.int8_matmul(op, inputs)[0], reference) <= TOLERANCE
    if HAS_TRITON:
        out = int8_tactics.triton_int8_matmul(op, inputs, int8_tactics.TRITON_CONFIGS[-1])[0]
        assert _relative_error(out, reference) <= TOLERANCE


SMALL_TMA = TmaGemmConfig(GemmConfig(32, 16, 32, 2, 4, 2))  # small tiles: several per program in the interpreter


@needs_triton
@pytest.mark.parametrize("epilogue", EPILOGUES[:2] + EPILOGUES[3:])
def test_tma_int8_pointwise_convolution_matches_float_reference(epilogue):
    """The TMA INT8 GEMM (triton/int8_gemm_tma.py) on a 1x1 convolution whose K and N are multiples of 16, with a
    float input (quantized first) and with an INT8 one, and with an INT8 output (int8_output_scale)."""
    op, inputs = _conv_case((2, 16, 9, 7, 32, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)), epilogue)
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    out = int8_tactics.tma_int8_pointwise_convolution(op, inputs, SMALL_TMA)[0]
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _relative_error(out, reference) <= TOLERANCE
    linked = [int8_tactics.quantize_input(inputs[0], INPUT_SCALE), *inputs[1:]]
    assert torch.equal(int8_tactics.tma_int8_pointwise_convolution(op, linked, SMALL_TMA)[0], out)
    requantized = dataclasses.replace(op, int8_output_scale=0.05)
    stored = int8_tactics.tma_int8_pointwise_convolution(requantized, linked, SMALL_TMA)[0]
    assert stored.dtype is torch.int8
    assert torch.equal(stored, torch.round(reference / 0.05).clamp(-128, 127).to(torch.int8))


@needs_triton
@pytest.mark.parametrize("rows, k, n, fields", [((3, 7), 48, 32, dict(residual=True)),
                                                ((2, 13), 16, 32, dict(activation=A.TANH, residual=True))])
def test_tma_int8_matmul_matches_float_reference(rows, k, n, fields):
    op, inputs = _matmul_case(rows, k, n, fields)
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    for config in (SMALL_TMA, dataclasses.replace(SMALL_TMA, tma_store=True)):  # the tile stored by TMA too
        assert _relative_error(int8_tactics.tma_int8_matmul(op, inputs, config)[0], reference) <= TOLERANCE


def test_cublaslt_predicates_keep_shapes_cublas_refuses():
    """cuBLASLt's INT8 GEMM needs M > 16 and K, N multiples of 8: other layers keep the float (or Triton) tactics."""
    for rows, k, n in [((16,), 8, 8), ((17,), 12, 8), ((17,), 8, 12)]:
        op, inputs = _matmul_case(rows, k, n, {})
        specs = [None if t is None else _spec(t) for t in inputs]
        assert not int8_tactics._cublas_matmul_ok(op, specs)
        assert int8_tactics._matmul_ok(op, specs)  # the Triton kernel has no such limits
    op, inputs = _conv_case((1, 3, 7, 6, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)), EPILOGUES[0])  # R S C = 27
    specs = [None if t is None else _spec(t) for t in inputs]
    assert not int8_tactics._cublas_im2col_ok(op, specs) and int8_tactics._conv_ok(op, specs)
    float_layer = [None if t is None else _spec(t) for t in inputs[:5]]
    assert not int8_tactics._conv_ok(dataclasses.replace(op, int8_input_scale=0.0), float_layer)


def test_input_off_the_grid_is_quantized_as_the_quantize_step_does():
    """An input not on the grid (the timer's random inputs) is rounded and clipped, never wrapped around."""
    x = torch.tensor([1000.0, -1000.0, 0.26, -0.26, float("nan")])
    assert int8_tactics.quantize_input(x, 0.1).tolist()[:4] == [127, -128, 3, -3]


def _network(rng):
    """conv 3x3 (bias, ReLU) -> conv 1x1 (bias) + residual -> ReLU -> fully connected (bias): fused layers only."""
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (2, 8, 9, 9))
    a = network.add_convolution(x, 16, (3, 3), rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2,
                                rng.standard_normal(16).astype(np.float32), padding=1, name="conv_a")
    relu = network.add_activation(a.get_output(0), tk.ActivationType.RELU, name="relu_a")
    b = network.add_convolution(relu.get_output(0), 16, (1, 1),
                                rng.standard_normal((16, 16, 1, 1)).astype(np.float32) * 0.2,
                                rng.standard_normal(16).astype(np.float32), name="conv_b")
    add = network.add_elementwise(b.get_output(0), relu.get_output(0), tk.ElementWiseOperation.SUM, name="add")
    relu_b = network.add_activation(add.get_output(0), tk.ActivationType.RELU, name="relu_b")
    fc = network.add_fully_connected(relu_b.get_output(0), 8, rng.standard_normal((8, 16 * 81)).astype(np.float32),
                                     rng.standard_normal(8).astype(np.float32), name="fc")
    network.mark_output(fc.get_output(0))
    return network.ir


def test_quantized_network_runs_the_same_on_the_integer_tactics():
    """The pass attaches the integer operands (exactly the simulated weights); a run with every quantized layer on
    its cuBLASLt INT8 tactic gives the simulated INT8 network's outputs; the engine reader accepts the operands."""
    rng = np.random.default_rng(3)
    graph = _network(rng)
    PassManager(DEFAULT_PIPELINE).run(graph)
    batches = [rng.standard_normal((2, 8, 9, 9)).astype(np.float32) for _ in range(2)]
    scales = calibrate(graph, DataCalibrator(batches, "minmax")).scales
    rewrite = QuantizeInt8(scales, integer_weights=True)
    rewrite.run(graph)
    FusePointwise().run(graph)
    assert rewrite.counts["quantized"] == 3
    quantized = [layer for layer in graph.layers if getattr(layer.op, "int8_input_scale", 0.0)]
    assert rewrite.counts["integer_operands"] == len(quantized) == 3
    for layer in quantized:
        q, bits = layer.inputs[5].value, layer.inputs[6].value
        dequantized = q.astype(np.float32) * bits.view(np.float32).reshape(-1, *[1] * (q.ndim - 1))
        if layer.kind == ops.FusedConvolution.KIND:
            dequantized = dequantized.transpose(0, 3, 1, 2)  # [K, R, S, C] -> [K, C, R, S]
        weights = layer.inputs[1].value
        assert np.array_equal(dequantized, weights if weights.ndim == 4 or layer.op.transpose_b else weights.T)
        check_op(layer.op, [None if t is None else TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in layer.inputs])

    used = []

    def integer_tactics(layer, args):
        if not getattr(layer.op, "int8_input_scale", 0.0):
            return None
        fn = int8_tactics.int8_matmul if layer.kind == ops.FusedMatMul.KIND else _conv_tactic(layer.op, args)
        used.append(layer.name)
        return fn(layer.op, args)

    runner = NetworkRunner(graph)
    feed = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}
    simulated = runner.run(feed, keep_all=False)
    integer = runner.run(feed, override=integer_tactics, keep_all=False)
    assert len(used) == 3
    for name, value in simulated.items():
        assert _relative_error(integer[name].reshape(value.shape), value) <= TOLERANCE


def test_engine_reader_refuses_broken_integer_operands():
    op, inputs = _conv_case(CONV_CASES[0], EPILOGUES[0])
    specs = [None if t is None else _spec(t) for t in inputs]
    check_op(op, specs)
    with pytest.raises(PlanProblem, match="int8 and its scales"):
        check_op(op, specs[:5] + [_spec(inputs[5].float()), specs[6]])
    with pytest.raises(PlanProblem, match="one scale"):
        check_op(op, specs[:6] + [_spec(inputs[6][:3])])
    with pytest.raises(PlanProblem, match="needs its INT8 weight"):
        check_op(op, specs[:5])
    with pytest.raises(PlanProblem, match="int8_input_scale"):
        check_op(dataclasses.replace(op, int8_input_scale=float("nan")), specs)
    with pytest.raises(PlanProblem, match="at most 5"):
        check_op(dataclasses.replace(op, int8_input_scale=0.0), specs)  # a float layer takes five inputs


def test_tactics_are_registered_for_the_cuda_target():
    for kind, impl in [("fused_matmul", "cublaslt_int8_gemm"), ("fused_convolution", "cublaslt_int8_1x1"),
                       ("fused_convolution", "cublaslt_int8_im2col")]:
        assert find_kernel(kind, "cuda", impl) is not None


def test_engine_with_integer_operands_round_trips_through_the_engine_file(monkeypatch):
    """The INT8 operands as the CUDA target attaches them (forced here on a CPU build, whose kernels read the first
    five inputs, and quantize the input as the layer's int8_input_scale says: a no-op on its grid): the plan
    validates, the engine file keeps the INT8 weights and the scales' bits, and the reloaded engine computes what an
    engine without them does."""
    import tensorkiln.quant.int8 as int8_build

    rng = np.random.default_rng(4)
    batches = [rng.standard_normal((2, 8, 9, 9)).astype(np.float32) for _ in range(2)]
    feed = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}

    def build():
        config = tk.BuilderConfig(precision=tk.Precision.INT8,
                                  int8=Int8Options(DataCalibrator(batches, "minmax")))
        return tk.Builder(config).build(_network(np.random.default_rng(3)))

    with_operands = build()

    class WithoutIntegerOperands(QuantizeInt8):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "integer_weights": False})

    monkeypatch.setattr(int8_build, "QuantizeInt8", WithoutIntegerOperands)
    plain = build()
    steps = [s for s in with_operands.plan.steps if getattr(s.op, "int8_input_scale", 0.0)]
    assert len(steps) == 3 and all(len(s.inputs) == 7 for s in steps)
    reloaded = tk.Runtime().deserialize(with_operands.serialize())
    weights = reloaded.device_weights()
    for step in steps:
        assert weights[step.inputs[5]].dtype == torch.int8 and weights[step.inputs[6]].dtype == torch.int32
    expected = plain.create_execution_context().execute(feed)
    got = reloaded.create_execution_context().execute(feed)
    for name, value in expected.items():  # (the CPU tactics the two builds chose may differ: FP32 rounding apart)
        assert _relative_error(torch.from_numpy(got[name]), torch.from_numpy(value)) <= TOLERANCE


def _chain(rng):
    """conv 3x3 (ReLU) -> conv 1x1 (ReLU) -> conv 3x3 strided -> fully connected: two links between integer layers
    (the flatten before the fully connected layer is not one)."""
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (2, 8, 9, 9))
    weights = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)  # noqa: E731
    a = network.add_convolution(x, 16, (3, 3), weights(16, 8, 3, 3), weights(16), padding=1, name="conv_a")
    relu_a = network.add_activation(a.get_output(0), tk.ActivationType.RELU, name="relu_a")
    b = network.add_convolution(relu_a.get_output(0), 16, (1, 1), weights(16, 16, 1, 1), weights(16), name="conv_b")
    relu_b = network.add_activation(b.get_output(0), tk.ActivationType.RELU, name="relu_b")
    c = network.add_convolution(relu_b.get_output(0), 8, (3, 3), weights(8, 16, 3, 3), weights(8), stride=2,
                                padding=1, name="conv_c")
    fc = network.add_fully_connected(c.get_output(0), 4, weights(4, 8 * 5 * 5), weights(4), name="fc")
    network.mark_output(fc.get_output(0))
    return network


def _unlinked_chain(monkeypatch):
    """The chain's INT8 engine as the builder makes it before the links, and the generator the tests draw from."""
    monkeypatch.setattr(tk.Builder, "_links_integer_layers", property(lambda self: False))
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((2, 8, 9, 9)).astype(np.float32) for _ in range(2)]
    config = tk.BuilderConfig(precision=tk.Precision.INT8, int8=Int8Options(DataCalibrator(batches, "minmax")))
    return tk.Builder(config).build(_chain(np.random.default_rng(2))), rng


def test_linked_integer_layers_keep_int8_activations_and_the_same_outputs(monkeypatch):
    """plan/integer_links.py: where a quantized layer on an integer kernel feeds only the quantize step of quantized
    layers on integer kernels, it stores INT8 and the step goes; where the producer cannot (the network input, a
    flatten), the step goes and the readers quantize the float tensor themselves. Run here with every quantized
    layer counted as integer and the portable kernels (the reference semantics of INT8 and float inputs, INT8
    outputs): the engine validates as a loaded one, holds INT8 activations, and gives the unlinked engine's outputs
    to the bit."""
    from tensorkiln.plan.integer_links import link_integer_layers
    from tensorkiln.plan.memory import plan_memory
    from tensorkiln.plan.validate import validate_plan
    from tensorkiln.runtime.engine import Engine

    engine, rng = _unlinked_chain(monkeypatch)
    plan, weights = engine.plan, engine.device_weights()
    outside = {spec.name for spec in plan.outputs}
    quantized = {s.name for s in plan.steps if getattr(s.op, "int8_input_scale", 0.0)}
    integer = lambda tactic: True  # noqa: E731 (only quantized layers are asked)
    scalar = lambda name: float(weights[name].reshape(-1)[0]) if weights[name].numel() == 1 else None  # noqa: E731
    steps, tensors, links = link_integer_layers(plan.steps, plan.tensors, outside, integer, scalar)
    assert [(link.producer, link.readers) for link in links] == [
        ("", ("conv_a.fused",)), ("conv_a.fused", ("conv_b.fused",)), ("conv_b.fused", ("conv_c.fused",)),
        ("", ("fc.fused",))]
    assert len(steps) == len(plan.steps) - 4 and len(quantized) == 4
    dtypes = {spec.name: spec.dtype for spec in tensors}
    assert [dtypes.get(link.tensor) for link in links] == [None, DataType.INT8, DataType.INT8, DataType.FLOAT]
    linked = dataclasses.replace(plan, steps=tuple(steps), tensors=tuple(tensors),
                                 memory=plan_memory(steps, tensors, outside))
    validate_plan(linked, on_this_machine=False)
    assert linked.memory.activation_bytes < plan.memory.activation_bytes
    feed = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}
    expected = engine.create_execution_context().execute(feed)
    got = Engine(linked, weights).create_execution_context().execute(feed)
    for name, value in expected.items():
        assert np.array_equal(got[name], value)
    # a reader on a float kernel keeps its quantize step, and its producer a float output
    float_tactic = "cpu.fused_convolution.float_kernel"
    steps = [dataclasses.replace(s, tactic=float_tactic) if s.name == "conv_c.fused" else s for s in plan.steps]
    _, _, links = link_integer_layers(steps, plan.tensors, outside, lambda tactic: tactic != float_tactic, scalar)
    assert [link.readers for link in links if link.int8] == [("conv_b.fused",)]
    assert "conv_c.fused" not in {reader for link in links for reader in link.readers}
    # ... and so does a producer on a float kernel
    steps = [dataclasses.replace(s, tactic=float_tactic) if s.name == "conv_a.fused" else s for s in plan.steps]
    _, _, links = link_integer_layers(steps, plan.tensors, outside, lambda tactic: tactic != float_tactic, scalar)
    assert [link.producer for link in links if link.int8] == ["conv_b.fused"]


def test_calibrated_layers_on_float_kernels_compute_unquantized(monkeypatch):
    """float_fallback (calibrated builds, TensorRT's mixed precision): a quantize step read only by layers that chose
    float kernels goes, and they become plain float layers reading the float tensor: the plan validates, they carry
    no INT8 operands, and the engine computes the network within INT8 rounding."""
    from tensorkiln.plan.integer_links import link_integer_layers
    from tensorkiln.plan.memory import plan_memory
    from tensorkiln.plan.validate import validate_plan
    from tensorkiln.runtime.engine import Engine

    engine, rng = _unlinked_chain(monkeypatch)
    plan, weights = engine.plan, engine.device_weights()
    outside = {spec.name for spec in plan.outputs}
    scalar = lambda name: float(weights[name].reshape(-1)[0]) if weights[name].numel() == 1 else None  # noqa: E731
    float_tactic = "cpu.fused_convolution.float_kernel"
    steps = [dataclasses.replace(s, tactic=float_tactic) if s.name in ("conv_c.fused", "fc.fused") else s
             for s in plan.steps]
    steps, tensors, links = link_integer_layers(steps, plan.tensors, outside, lambda t: t != float_tactic, scalar,
                                                float_fallback=True)
    assert [(link.readers, link.float_readers) for link in links] == [
        (("conv_a.fused",), False), (("conv_b.fused",), False), (("conv_c.fused",), True), (("fc.fused",), True)]
    by_name = {step.name: step for step in steps}
    for name in ("conv_c.fused", "fc.fused"):
        assert by_name[name].op.int8_input_scale == 0.0 and len(by_name[name].inputs) == 5
    assert by_name["conv_c.fused"].inputs[0] == by_name["conv_b.fused"].outputs[0]
    assert by_name["conv_b.fused"].op.int8_output_scale == 0.0  # its reader is float: it stores float
    assert not any(s.kind == "fused_pointwise" for s in steps)
    tactics = {step.name: step.tactic for step in plan.steps}  # the CPU kernels they run here
    steps = [dataclasses.replace(step, tactic=tactics[step.name]) for step in steps]
    unquantized = dataclasses.replace(plan, steps=tuple(steps), tensors=tuple(tensors),
                                      memory=plan_memory(steps, tensors, outside))
    validate_plan(unquantized, on_this_machine=False)
    feed = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}
    got = Engine(unquantized, weights).create_execution_context().execute(feed)
    exact = tk.Builder(tk.BuilderConfig()).build(_chain(np.random.default_rng(2))).create_execution_context()
    quantized = engine.create_execution_context().execute(feed)
    for name, value in exact.execute(feed).items():  # (8 output values: too few to rank the two errors)
        assert _relative_error(torch.from_numpy(got[name]), torch.from_numpy(value)) < 0.1
        assert not np.array_equal(got[name], quantized[name])  # the last two layers no longer quantize their input


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2]])
def test_integer_tactics_read_and_write_int8_activations(case):
    """A linked layer (plan/integer_links.py): INT8 input, INT8 output at int8_output_scale; every integer tactic
    gives the portable kernel's INT8 values (the same rounding: half to even)."""
    op, inputs = _conv_case(case, EPILOGUES[1])
    op = dataclasses.replace(op, int8_output_scale=0.05)
    inputs[0] = int8_tactics.quantize_input(inputs[0], INPUT_SCALE).contiguous(memory_format=torch.channels_last)
    reference = get_kernel(op.KIND)(op, inputs)[0]
    assert reference.dtype == torch.int8 and reference.abs().max() > 10  # not all rounded to zero
    outputs = [_conv_tactic(op, inputs)(op, inputs)[0]]
    if HAS_TRITON:
        outputs.append(int8_tactics.triton_int8_convolution(op, inputs, int8_tactics.TRITON_CONFIGS[-1])[0])
    for out in outputs:
        assert out.dtype == torch.int8
        # one step apart at most where the FP32 sums of the two orders straddle a rounding boundary
        assert (out.int() - reference.int()).abs().max() <= 1 and (out != reference).float().mean() < 0.01
    op, inputs = _matmul_case((3, 7), 40, 24, dict(residual=True))
    op = dataclasses.replace(op, int8_output_scale=0.05)
    inputs[0] = int8_tactics.quantize_input(inputs[0], INPUT_SCALE)
    reference = get_kernel(op.KIND)(op, inputs)[0]
    for out in [int8_tactics.int8_matmul(op, inputs)[0]] + ([int8_tactics.triton_int8_matmul(
            op, inputs, int8_tactics.TRITON_CONFIGS[-1])[0]] if HAS_TRITON else []):
        assert out.dtype == torch.int8 and (out.int() - reference.int()).abs().max() <= 1


def _quantized_chain():
    """_chain after the default passes, quantized with the integer operands as the CUDA target does."""
    rng = np.random.default_rng(2)
    graph = _chain(rng).ir
    PassManager(DEFAULT_PIPELINE).run(graph)
    batches = [np.random.default_rng(6).standard_normal((2, 8, 9, 9)).astype(np.float32)]
    QuantizeInt8(calibrate(graph, DataCalibrator(batches, "minmax")).scales, integer_weights=True).run(graph)
    FusePointwise().run(graph)
    return graph


def test_integer_tactics_are_timed_as_they_run_once_linked():
    """Before tactics are chosen the builder expects the links every integer choice would make, and times the
    integer tactics of those layers with an INT8 input (or output): the timing cache holds those keys."""
    from tensorkiln.int8_links import time_as_linked
    from tensorkiln.plan.integer_links import expected_links
    from tensorkiln.tactics.selection import tactic_id
    from tensorkiln.tactics.timing import TacticTimer, TimingCache

    graph = _quantized_chain()
    int8_inputs, int8_outputs = expected_links(graph)
    assert (int8_inputs, int8_outputs) == ({"conv_b.fused", "conv_c.fused"}, {"conv_a.fused", "conv_b.fused"})
    layer = next(layer for layer in graph.layers if layer.name == "conv_b.fused")
    entries = [find_kernel(layer.kind, "cuda", "torch"), find_kernel(layer.kind, "cuda", "cublaslt_int8_1x1")]
    timer = TacticTimer(torch.device("cpu"), torch.float32, TimingCache(), runs=1)
    best = time_as_linked(timer, layer, entries, in_place=False, int8_input=True, int8_output=True)
    assert best in entries
    timed = {key.split("|", 1)[0]: json.loads(key.split("|", 1)[1]) for key in timer.cache.entries}
    op_json, inputs, _, _ = timed[tactic_id(entries[1])]
    assert inputs[0][1] == "int8" and op_json["attrs"]["int8_output_scale"] == 1.0  # timed reading and storing INT8
    op_json, inputs, _, _ = timed[tactic_id(entries[0])]
    assert inputs[0][1] == "float32" and op_json["attrs"].get("int8_output_scale", 0.0) == 0.0  # as built


def test_builder_times_and_links_integer_layers(monkeypatch):
    """The builder's side of the links, run on the CPU: the portable convolution and GEMM kernels (which give INT8
    inputs and outputs their reference semantics) stand in for the integer kernels of a GPU build. The layers a link
    is expected for are timed as linked, the links are made, the engine passes the loader's checks, holds INT8
    activations, and computes what the INT8 engine without links does."""
    import tensorkiln.builder as builder_module
    import tensorkiln.kernels.integer as integer_kernels
    from tensorkiln.kernels.cpu import int8_onednn

    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((2, 8, 9, 9)).astype(np.float32) for _ in range(2)]
    feed = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}

    def build(hints=()):
        config = tk.BuilderConfig(precision=tk.Precision.INT8, int8=Int8Options(DataCalibrator(batches, "minmax")),
                                  tactic_hints=hints)
        builder = tk.Builder(config)
        return builder.build(_chain(np.random.default_rng(2))), builder.build_log

    # the portable kernels stand in for the integer ones: oneDNN's INT8 tactic (a real one) must not be timed in
    monkeypatch.setattr(int8_onednn, "_available", lambda: False)
    monkeypatch.setattr(builder_module.Builder, "_links_integer_layers", property(lambda self: False))
    plain, _ = build()
    monkeypatch.setattr(integer_kernels, "is_integer_tactic", lambda tactic: tactic.split(".")[1] in (
        "fused_convolution", "fused_matmul"))
    monkeypatch.setattr(builder_module.Builder, "_links_integer_layers", property(lambda self: True))
    linked, log = build()
    assert any("int8: 4 quantize steps removed: 2 layers store INT8" in line for line in log)
    assert not any(step.kind == "fused_pointwise" for step in linked.plan.steps)
    int8 = [spec.name for spec in linked.plan.tensors if spec.dtype is DataType.INT8]
    assert len(int8) == 2
    reloaded = tk.Runtime().deserialize(linked.serialize())  # the loader's checks of the linked plan
    expected = plain.create_execution_context().execute(feed)
    got = reloaded.create_execution_context().execute(feed)
    for name, value in expected.items():
        assert _relative_error(torch.from_numpy(got[name]), torch.from_numpy(value)) <= TOLERANCE

    # conv_c on a "float" kernel (torch_direct stands in for one here): the link into it does not form, conv_b's
    # output stays float, and conv_b's tactic is settled for the run it will have. On the CPU target a quantized
    # layer on a float kernel stays quantized (the simulated INT8 reference; a GPU build would run it unquantized)
    monkeypatch.setattr(integer_kernels, "is_integer_tactic", lambda tactic: tactic.endswith(".torch"))
    hinted, log = build((("conv_c.fused", "cpu.fused_convolution.torch_direct"),))
    steps = {s.name: s for s in hinted.plan.steps}
    assert steps["conv_c.fused"].tactic.endswith("torch_direct") and steps["conv_c.fused"].op.int8_input_scale
    conv_b_output = steps["conv_b.fused"].outputs[0]
    assert {spec.name: spec.dtype for spec in hinted.plan.tensors}[conv_b_output] is DataType.FLOAT
    got = tk.Runtime().deserialize(hinted.serialize()).create_execution_context().execute(feed)
    for name, value in expected.items():
        assert _relative_error(torch.from_numpy(got[name]), torch.from_numpy(value)) <= TOLERANCE
