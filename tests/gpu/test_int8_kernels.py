"""The INT8 tactics on a GPU (kernels/cuda/int8.py, kernels/cuda/triton/int8_gemm.py): each against the float
reference of its layer (the portable kernel in FP32 on the CPU, on the same INT8-grid input and dequantized weights)
at awkward shapes, FP16 activations as INT8 engines hold them; and INT8 engines built for the GPU: every quantized
layer forced onto each integer tactic family gives the simulated INT8 engine's outputs, the engine file round-trips,
and the timer's own choice is right too; linked layers keep INT8 activations between them. The same kernels on the CPU and in Triton's interpreter:
tests/kernels/test_int8_kernels_cpu.py."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.builder import BuilderConfig, Target
from tensorkiln.ir import ops
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.kernels.cuda import int8 as int8_tactics
from tensorkiln.kernels.registry import get_kernel
from tensorkiln.quant.calibrator import DataCalibrator
from tensorkiln.quant.int8 import Int8Options
from tensorkiln.quant.precision import Precision
from tensorkiln.quant.weights import quantize_weights

pytestmark = pytest.mark.gpu

FP16_TOLERANCE = 1e-2  # one layer in FP16 against FP32 on the same inputs (test_cuda_target.py's table)
SCALE = 0.037


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape
    out, ref = out.float().cpu(), ref.float().cpu()
    return (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)


def _conv_inputs(rng, n, c, h, w, k, r, s, residual_shape):
    x = torch.from_numpy(rng.integers(-128, 128, (n, c, h, w))).float() * SCALE
    q, scales = quantize_weights(rng.standard_normal((k, c, r, s)).astype(np.float32), 0)
    float_weights = torch.from_numpy(q.astype(np.float32) * scales.reshape(-1, 1, 1, 1))
    bias = torch.from_numpy(rng.standard_normal(k).astype(np.float32))
    residual = torch.from_numpy(rng.standard_normal(residual_shape).astype(np.float32))
    return [x, float_weights, bias, residual, None, torch.from_numpy(np.ascontiguousarray(q.transpose(0, 2, 3, 1))),
            torch.from_numpy(scales.view(np.int32))]


def _on_gpu(inputs):
    """FP16 activations and weights, channels-last, as an INT8 engine holds them; the INT8 operands as they are."""
    moved = []
    for index, t in enumerate(inputs):
        if t is None:
            moved.append(None)
            continue
        t = t.cuda().half() if t.is_floating_point() and index < 5 else t.cuda()
        moved.append(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 and index < 5 else t)
    return moved


# (n, c, h, w, k, r, s, stride, pads): shapes cuBLASLt's INT8 GEMM takes (M > 16, K and N multiples of 8), odd sizes
CONV_CASES = [(2, 16, 9, 7, 24, 1, 1, (1, 1), (0, 0, 0, 0)), (1, 64, 13, 11, 40, 1, 1, (2, 2), (0, 0, 0, 0)),
              (3, 8, 15, 9, 16, 3, 3, (2, 2), (1, 1, 1, 1)), (1, 24, 7, 7, 56, 3, 3, (1, 1), (1, 0, 1, 2))]


@pytest.mark.parametrize("case", CONV_CASES)
def test_int8_convolution_tactics_on_gpu(case):
    n, c, h, w, k, r, s, stride, pads = case
    op = ops.FusedConvolution(stride, pads, (1, 1), residual=True, post_activation=A.RELU, int8_input_scale=SCALE)
    p = (h + pads[0] + pads[2] - r) // stride[0] + 1
    q = (w + pads[1] + pads[3] - s) // stride[1] + 1
    inputs = _conv_inputs(np.random.default_rng(sum(case[:7])), n, c, h, w, k, r, s, (n, k, p, q))
    gpu = _on_gpu(inputs)
    reference = get_kernel(op.KIND)(op, [t.float().cpu() if t is not None else None for t in gpu[:5]])[0]
    pointwise = int8_tactics._is_pointwise(op, inputs[5].shape)
    cublas = int8_tactics.int8_pointwise_convolution if pointwise else int8_tactics.int8_im2col_convolution
    outputs = [cublas(op, gpu)[0]] + [int8_tactics.triton_int8_convolution(op, gpu, config)[0]
                                      for config in int8_tactics.TRITON_CONFIGS]
    for out in outputs:
        assert out.dtype == torch.float16 and out.is_contiguous(memory_format=torch.channels_last)
        assert _relative_error(out, reference) <= FP16_TOLERANCE


@pytest.mark.parametrize("rows, k, n", [((17,), 8, 8), ((4, 33), 72, 40), ((2, 128), 768, 3072)])
def test_int8_gemm_tactics_on_gpu(rows, k, n):
    rng = np.random.default_rng(k)
    a = torch.from_numpy(rng.integers(-128, 128, (*rows, k))).float() * SCALE
    q, scales = quantize_weights(rng.standard_normal((n, k)).astype(np.float32), 0)
    op = ops.FusedMatMul(transpose_b=True, activation=A.GELU_ERF, int8_input_scale=SCALE)
    inputs = _on_gpu([a, torch.from_numpy(q.astype(np.float32) * scales[:, None]),
                      torch.from_numpy(rng.standard_normal(n).astype(np.float32)), None, None,
                      torch.from_numpy(q), torch.from_numpy(scales.view(np.int32))])
    reference = get_kernel(op.KIND)(op, [t.float().cpu() if t is not None else None for t in inputs[:5]])[0]
    outputs = [int8_tactics.int8_matmul(op, inputs)[0]] + [int8_tactics.triton_int8_matmul(op, inputs, config)[0]
                                                           for config in int8_tactics.TRITON_CONFIGS]
    for out in outputs:
        assert _relative_error(out, reference) <= FP16_TOLERANCE


def _network(rng):
    """conv 3x3 (BN-like bias, ReLU) -> conv 1x1 + residual -> ReLU -> 3x3 strided -> fully connected."""
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (4, 16, 14, 14))
    weights = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)  # noqa: E731
    a = network.add_convolution(x, 32, (3, 3), weights(32, 16, 3, 3), weights(32), padding=1, name="conv_a")
    relu = network.add_activation(a.get_output(0), tk.ActivationType.RELU, name="relu_a")
    b = network.add_convolution(relu.get_output(0), 32, (1, 1), weights(32, 32, 1, 1), weights(32), name="conv_b")
    add = network.add_elementwise(b.get_output(0), relu.get_output(0), tk.ElementWiseOperation.SUM, name="add")
    relu_b = network.add_activation(add.get_output(0), tk.ActivationType.RELU, name="relu_b")
    c = network.add_convolution(relu_b.get_output(0), 48, (3, 3), weights(48, 32, 3, 3), weights(48), stride=2,
                                padding=1, name="conv_c")
    fc = network.add_fully_connected(c.get_output(0), 16, weights(16, 48 * 7 * 7), weights(16), name="fc")
    network.mark_output(fc.get_output(0))
    return network


def _build(target: Target, rng_seed: int = 0, hints=(), strict: bool = True):
    rng = np.random.default_rng(rng_seed)
    network = _network(rng)
    calibration = [np.random.default_rng(9).standard_normal((4, 16, 14, 14)).astype(np.float32) for _ in range(4)]
    config = BuilderConfig(target=target, precision=Precision.INT8, opt_level=2, tactic_hints=tuple(hints),
                           int8=Int8Options(DataCalibrator(calibration, "minmax"), strict=strict))
    return tk.Builder(config).build(network)


@pytest.mark.parametrize("family", ["cublaslt_int8", "triton_int8"])
def test_int8_engine_on_integer_tactics_matches_simulated_int8(family):
    feed = {"x": np.random.default_rng(5).standard_normal((4, 16, 14, 14)).astype(np.float32)}
    simulated = _build(Target.CPU).create_execution_context().execute(feed)
    timed = _build(Target.CUDA)
    quantized = [s for s in timed.plan.steps if getattr(s.op, "int8_input_scale", 0.0)]
    assert len(quantized) == 4  # three convolutions and the fully connected layer
    specs = {spec.name: spec for spec in (*timed.plan.inputs, *timed.plan.tensors, *timed.plan.weights)}
    hints = []
    for step in quantized:  # the first integer tactic of the family that serves the layer
        inputs = [None if name is None else specs[name] for name in step.inputs]
        serving = [f"cuda.{e.kind}.{e.impl}" for e in _integer_kernels(step.kind)
                   if e.impl.startswith(family) and e.accepts(step.op, inputs)]
        if serving:
            hints.append((step.name, serving[0]))
    assert hints, f"no layer has a {family} tactic"
    forced = _build(Target.CUDA, hints=hints)
    chosen = {s.name: s.tactic for s in forced.plan.steps}
    assert all(chosen[name] == tactic for name, tactic in hints)
    # conv_b -> conv_c are both integer: conv_b stores INT8 (plan/integer_links.py); the other quantize steps go too
    outputs = {s.name: s.outputs[0] for s in forced.plan.steps}
    assert {spec.name: spec.dtype for spec in forced.plan.tensors}[outputs["conv_b.fused"]] is tk.DataType.INT8
    if family == "triton_int8":  # every quantized layer hinted (cuBLASLt cannot take fc's 4 rows)
        assert not any(step.kind == "fused_pointwise" for step in forced.plan.steps)
    reloaded = tk.Runtime().deserialize(forced.serialize())  # INT8 operands and predicates through the engine file
    for engine in (timed, forced, reloaded):
        out = engine.create_execution_context().execute(feed)
        for name, value in simulated.items():
            assert _relative_error(_tensor(out[name]), _tensor(value)) <= 3e-2  # FP16 float layers


def _tensor(value) -> torch.Tensor:
    return value.cpu() if torch.is_tensor(value) else torch.from_numpy(np.asarray(value))


def _integer_kernels(kind: str) -> list:
    """The integer kernels registered for a layer kind on the CUDA target."""
    from tensorkiln.kernels.registry import _KERNELS

    return [e for (k, t, impl), e in _KERNELS.items() if k == kind and t == "cuda" and "int8" in impl]


def test_calibrated_layers_on_float_kernels_run_unquantized_in_fp16():
    """Without strict, a quantized layer whose float kernel won computes as a plain FP16 layer: no quantize step is
    left before a float kernel, and the engine is at least as close to FP32 as the simulated INT8 one."""
    feed = {"x": np.random.default_rng(5).standard_normal((4, 16, 14, 14)).astype(np.float32)}
    mixed = _build(Target.CUDA, strict=False)
    producers = {s.outputs[0]: s for s in mixed.plan.steps}
    for step in mixed.plan.steps:
        if _is_quantize_step(step):  # a quantize step left: some reader of it is on an integer kernel
            readers = [s for s in mixed.plan.steps if step.outputs[0] in s.inputs]
            assert any(int8_tactics.is_integer_tactic(s.tactic) for s in readers)
        if getattr(step.op, "int8_input_scale", 0.0) == 0.0 and step.kind in ("fused_convolution", "fused_matmul"):
            source = producers.get(step.inputs[0])
            assert source is None or not _is_quantize_step(source)
    exact = tk.Builder(BuilderConfig(target=Target.CPU)).build(_network(np.random.default_rng(0)))
    reference = exact.create_execution_context().execute(feed)
    simulated = _build(Target.CPU).create_execution_context().execute(feed)
    out = mixed.create_execution_context().execute(feed)
    for name, value in reference.items():
        mixed_error = _relative_error(_tensor(out[name]), _tensor(value))
        assert mixed_error <= max(_relative_error(_tensor(simulated[name]), _tensor(value)), 1e-2) * 1.5


def _is_quantize_step(step) -> bool:
    from tensorkiln.plan.integer_links import FAKE_QUANTIZE_PROGRAM

    return step.kind == "fused_pointwise" and tuple(step.op.program) == FAKE_QUANTIZE_PROGRAM


@pytest.mark.parametrize("linked", [False, True])
def test_tma_int8_tactics_on_gpu(linked):
    """The persistent TMA INT8 GEMM (Hopper) on a 1x1 convolution with residual and on a BERT-sized GEMM, with a float
    input (quantized first) or an INT8 one, against the float reference; and storing INT8 for the next layer."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("TMA needs compute capability 9.0")
    n, c, h, w, k = 2, 64, 28, 28, 128
    op = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), residual=True, post_activation=A.RELU,
                              int8_input_scale=SCALE)
    gpu = _on_gpu(_conv_inputs(np.random.default_rng(3), n, c, h, w, k, 1, 1, (n, k, h, w)))
    reference = get_kernel(op.KIND)(op, [t.float().cpu() if t is not None else None for t in gpu[:5]])[0]
    if linked:
        gpu[0] = int8_tactics.quantize_input(gpu[0], SCALE).contiguous(memory_format=torch.channels_last)
    for config in int8_tactics.TMA_CONFIGS:
        out = int8_tactics.tma_int8_pointwise_convolution(op, gpu, config)[0]
        assert out.dtype == torch.float16 and out.is_contiguous(memory_format=torch.channels_last)
        assert _relative_error(out, reference) <= FP16_TOLERANCE
    stored = int8_tactics.tma_int8_pointwise_convolution(
        dataclasses.replace(op, int8_output_scale=0.05), gpu, int8_tactics.TMA_CONFIGS[0])[0]
    expected = torch.round(reference.float() / 0.05).clamp(-128, 127)
    assert stored.dtype == torch.int8 and (stored.float().cpu() - expected).abs().max() <= 1  # FP16 rounding apart

    rng = np.random.default_rng(7)
    a = torch.from_numpy(rng.integers(-128, 128, (4, 128, 768))).float() * SCALE
    q, scales = quantize_weights(rng.standard_normal((3072, 768)).astype(np.float32), 0)
    matmul = ops.FusedMatMul(transpose_b=True, activation=A.GELU_ERF, int8_input_scale=SCALE)
    inputs = _on_gpu([a, torch.from_numpy(q.astype(np.float32) * scales[:, None]),
                      torch.from_numpy(rng.standard_normal(3072).astype(np.float32)), None, None,
                      torch.from_numpy(q), torch.from_numpy(scales.view(np.int32))])
    reference = get_kernel(matmul.KIND)(matmul, [t.float().cpu() if t is not None else None for t in inputs[:5]])[0]
    if linked:
        inputs[0] = int8_tactics.quantize_input(inputs[0], SCALE)
    for config in int8_tactics.TMA_CONFIGS:
        assert _relative_error(int8_tactics.tma_int8_matmul(matmul, inputs, config)[0], reference) <= FP16_TOLERANCE
