"""The CPU integer tactics (kernels/cpu/int8_onednn.py: oneDNN's quantized convolution and matrix product) against
the float reference of the layer they serve (the portable kernel on the same INT8-grid input and the dequantized
weights: what the simulated INT8 path computes), with float and INT8 inputs and INT8 outputs; and a CPU INT8 engine
whose quantized layers run them, against the same engine on the float kernels."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.ir import ops
from tensorkiln.kernels import integer
from tensorkiln.kernels.cpu import int8_onednn
from tensorkiln.kernels.registry import get_kernel

from test_int8_kernels_cpu import (CONV_CASES, EPILOGUES, INPUT_SCALE, MATMUL_CASES, TOLERANCE, _chain, _conv_case,
                                   _matmul_case, _relative_error, _spec)
from tensorkiln.quant.calibrator import DataCalibrator
from tensorkiln.quant.int8 import Int8Options
from tensorkiln.quant.weights import quantize_weights

pytestmark = pytest.mark.skipif(not int8_onednn._available(), reason="this torch has no oneDNN quantized kernels")


def _linked(inputs):
    """The inputs with x as the INT8 tensor a linked integer layer before would store."""
    grid = torch.round(inputs[0] / INPUT_SCALE).clamp(-128, 127).to(torch.int8)
    return [grid, *inputs[1:]]


@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_onednn_int8_convolution_matches_float_reference(case, epilogue):
    op, inputs = _conv_case(case, epilogue)
    specs = [None if t is None else _spec(t) for t in inputs]
    pads_symmetric = case[8][:2] == case[8][2:]
    assert int8_onednn._conv_ok(op, specs) == pads_symmetric  # asymmetric pads keep the other kernels
    if not pads_symmetric:
        return
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    out = int8_onednn.int8_convolution(op, inputs)[0]
    assert _relative_error(out, reference) <= TOLERANCE
    assert torch.equal(int8_onednn.int8_convolution(op, _linked(inputs))[0], out)  # an INT8 input: the same grid
    stored = dataclasses.replace(op, int8_output_scale=0.05)  # an INT8 output for the next integer layer
    expected = get_kernel(op.KIND)(stored, inputs[:5])[0]
    got = int8_onednn.int8_convolution(stored, inputs)[0]
    assert got.dtype is torch.int8 and (got.int() - expected.int()).abs().max() <= 1  # FP32 rounding at ties


@pytest.mark.parametrize("rows, k, n, fields", MATMUL_CASES)
def test_onednn_int8_matmul_matches_float_reference(rows, k, n, fields):
    op, inputs = _matmul_case(rows, k, n, fields)
    assert int8_onednn._matmul_ok(op, [None if t is None else _spec(t) for t in inputs])
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    assert _relative_error(int8_onednn.int8_matmul(op, inputs)[0], reference) <= TOLERANCE
    assert _relative_error(int8_onednn.int8_matmul(op, _linked(inputs))[0], reference) <= TOLERANCE


def test_nan_input_counts_as_zero_as_on_the_gpu():
    x = torch.tensor([float("nan"), 1.0, -1e9, 1e9])
    assert int8_onednn.uint8_grid(x, 0.5).tolist() == [128, 130, 0, 255]
    assert integer.is_integer_tactic("cpu.fused_convolution.onednn_int8")
    assert not integer.is_integer_tactic("cpu.fused_convolution.torch")


def test_cpu_int8_engine_on_onednn_matches_the_simulated_engine():
    """Every quantized layer of the chain hinted onto oneDNN: the links form (INT8 activations between them), the
    engine round-trips through its file and computes what the engine on the float kernels does."""
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((2, 8, 9, 9)).astype(np.float32) for _ in range(2)]
    feed = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}

    def build(hints):
        config = tk.BuilderConfig(precision=tk.Precision.INT8, tactic_hints=tuple(hints),
                                  int8=Int8Options(DataCalibrator(batches, "minmax")))
        builder = tk.Builder(config)
        return builder.build(_chain(np.random.default_rng(2))), builder.build_log

    names = ("conv_a.fused", "conv_b.fused", "conv_c.fused")
    simulated, _ = build([(name, "cpu.fused_convolution.torch") for name in names] + [("fc.fused",
                                                                                         "cpu.fused_matmul.torch")])
    onednn, log = build([(name, "cpu.fused_convolution.onednn_int8") for name in names]
                        + [("fc.fused", "cpu.fused_matmul.onednn_int8")])
    assert all(step.tactic.endswith("onednn_int8") for step in onednn.plan.steps if step.name in (*names, "fc.fused"))
    assert any("2 layers store INT8 activations" in line for line in log)
    int8 = [spec for spec in onednn.plan.tensors if spec.dtype is tk.DataType.INT8]
    assert len(int8) == 2
    reloaded = tk.Runtime().deserialize(onednn.serialize())
    expected = simulated.create_execution_context().execute(feed)
    got = reloaded.create_execution_context().execute(feed)
    for name, value in expected.items():
        assert _relative_error(torch.from_numpy(got[name]), torch.from_numpy(value)) <= 1e-4


@pytest.mark.parametrize("groups, channels, filters", [(8, 8, 8), (8, 8, 16), (2, 8, 12)])  # depthwise, x2, grouped
def test_onednn_int8_grouped_convolution_matches_float_reference(groups, channels, filters):
    """Grouped and depthwise convolutions (MobileNets): the weights [K, C/groups, R, S] as INT8 [K, R, S, C/groups]."""
    rng = np.random.default_rng(groups + filters)
    x = torch.from_numpy(rng.integers(-128, 128, (2, channels, 9, 7))).float() * INPUT_SCALE
    q, scales = quantize_weights(rng.standard_normal((filters, channels // groups, 3, 3)).astype(np.float32), 0)
    op = ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), groups, activation=ops.ActivationType.RELU,
                              int8_input_scale=INPUT_SCALE)
    inputs = [x.contiguous(memory_format=torch.channels_last),
              torch.from_numpy(q.astype(np.float32) * scales.reshape(-1, 1, 1, 1)),
              torch.from_numpy(rng.standard_normal(filters).astype(np.float32)), None, None,
              torch.from_numpy(np.ascontiguousarray(q.transpose(0, 2, 3, 1))), torch.from_numpy(scales.view(np.int32))]
    assert int8_onednn._conv_ok(op, [None if t is None else _spec(t) for t in inputs])
    reference = get_kernel(op.KIND)(op, inputs[:5])[0]
    assert _relative_error(int8_onednn.int8_convolution(op, inputs)[0], reference) <= TOLERANCE
