"""Every CUDA tactic against the portable reference kernel (run on the CPU in FP32), on awkward shapes, in FP32 and
FP16. The cases name layers; the tactics come from the kernel registry, so a tactic registered later is tested
here without a new test, as long as some case below reaches it (the last test checks that every one is reached)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tensorkiln.ir import ops
from tensorkiln.ir.dtypes import DataType
from tensorkiln.ir.graph import Tensor
from tensorkiln.kernels.registry import REFERENCE_TARGET, candidates, get_kernel

A = ops.ActivationType
pytestmark = pytest.mark.gpu

# Relative tolerance (max |out - ref| / max |ref|) per compute dtype, as in bench/gpu_peers.py for FP16.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    op: ops.OpAttrs
    shapes: tuple  # one entry per input: a shape, or None for an absent optional input
    constant: tuple = ()  # indexes of inputs that are weights

    def tensors(self) -> list[Tensor | None]:
        specs = []
        for index, shape in enumerate(self.shapes):
            if shape is None:
                specs.append(None)
                continue
            value = np.zeros(shape, np.float32) if index in self.constant else None
            specs.append(Tensor(f"in{index}", DataType.FLOAT, shape, value=value))
        return specs


def _conv(activation=None, residual=False, post=None, stride=(1, 1), pads=(1, 1, 1, 1), groups=1, channels=(13, 24),
          alpha=0.1):
    c_in, c_out = channels
    op = ops.FusedConvolution(stride, pads, (1, 1), groups, activation=activation, alpha=alpha, beta=6.0,
                              residual=residual, post_activation=post)
    out_hw = ((11 + pads[0] + pads[2] - 3) // stride[0] + 1, (9 + pads[1] + pads[3] - 3) // stride[1] + 1)
    residual_shape = (2, c_out, *out_hw) if residual else None
    return op, ((2, c_in, 11, 9), (c_out, c_in // groups, 3, 3), (c_out,), residual_shape, None)


def _matmul(activation=None, residual=False, bias=True, transpose_b=False):
    op = ops.FusedMatMul(transpose_b=transpose_b, activation=activation, residual=residual)
    weight = (40, 33) if transpose_b else (33, 40)
    return op, ((3, 7, 33), weight, (40,) if bias else None, (3, 7, 40) if residual else None, None)


CASES = [
    Case("conv_relu", *_conv(A.RELU), constant=(1, 2)),
    Case("conv_add_relu", *_conv(None, residual=True, post=A.RELU), constant=(1, 2)),
    Case("conv_relu_add", *_conv(A.RELU, residual=True), constant=(1, 2)),
    Case("conv_clip_stride2_asym", *_conv(A.CLIP, stride=(2, 2), pads=(0, 1, 1, 0)), constant=(1, 2)),
    Case("conv_relu6", *_conv(A.CLIP, alpha=0.0), constant=(1, 2)),  # values above 6 occur: randn * 13 * 9 terms
    Case("conv_depthwise_relu6", *_conv(A.CLIP, groups=16, channels=(16, 16), alpha=0.0), constant=(1, 2)),
    Case("conv_depthwise_hswish", *_conv(A.HARD_SWISH, groups=16, channels=(16, 16)), constant=(1, 2)),
    Case("conv_silu_1x1", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, activation=A.SILU),
         ((2, 13, 7, 5), (24, 13, 1, 1), (24,), None, None), constant=(1, 2)),
    Case("conv_1x1_bias", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1),
         ((2, 13, 7, 5), (24, 13, 1, 1), (24,), None, None), constant=(1, 2)),
    Case("conv_1x1_relu", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, activation=A.RELU),
         ((1, 40, 7, 7), (24, 40, 1, 1), (24,), None, None), constant=(1, 2)),
    Case("conv_1x1_residual", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True),  # MobileNetV2
         ((1, 40, 7, 7), (24, 40, 1, 1), (24,), (1, 24, 7, 7), None), constant=(1, 2)),
    Case("conv_1x1_residual_no_bias", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True),
         ((1, 40, 7, 7), (24, 40, 1, 1), None, (1, 24, 7, 7), None), constant=(1,)),  # forward_residual_bias's
    Case("conv_1x1_stride2", ops.FusedConvolution((2, 2), (0, 0, 0, 0), (1, 1), 1),  # ResNet's downsample, biasless
         ((2, 16, 8, 6), (24, 16, 1, 1), None, None, None), constant=(1,)),
    Case("conv_1x1_stride2_add_relu", ops.FusedConvolution((2, 2), (0, 0, 0, 0), (1, 1), 1, residual=True,
                                                           post_activation=A.RELU),
         ((1, 16, 8, 8), (24, 16, 1, 1), (24,), (1, 24, 4, 4), None), constant=(1, 2)),
    Case("conv_1x1_add_relu", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True,  # ResNet
                                                   post_activation=A.RELU),
         ((2, 40, 7, 5), (24, 40, 1, 1), (24,), (2, 24, 7, 5), None), constant=(1, 2)),
    Case("conv_splitk", *_conv(A.RELU, channels=(288, 24)), constant=(1, 2)),  # few tiles, long K: split-K
    Case("conv_plain", ops.Convolution((1, 1), (1, 0, 2, 1), (1, 1), 1), ((2, 13, 11, 9), (24, 13, 3, 3), (24,)),
         constant=(1, 2)),
    Case("conv_plain_splitk", ops.Convolution((1, 1), (1, 1, 1, 1), (1, 1), 1), ((1, 288, 7, 5), (24, 288, 3, 3)),
         constant=(1,)),
    Case("conv_plain_depthwise", ops.Convolution((2, 2), (1, 1, 1, 1), (1, 1), 16), ((2, 16, 11, 9), (16, 1, 3, 3)),
         constant=(1,)),
    Case("matmul_bias", *_matmul(), constant=(1, 2)),
    Case("matmul_bias_relu", *_matmul(A.RELU), constant=(1, 2)),
    Case("matmul_bias_gelu_t", *_matmul(A.GELU_ERF, transpose_b=True), constant=(1, 2)),
    Case("matmul_residual", *_matmul(residual=True), constant=(1, 2)),
    Case("matmul_large_residual", ops.FusedMatMul(residual=True, post_activation=A.RELU),
         ((4, 2048, 64), (64, 512), (512,), (4, 2048, 512), None), constant=(1, 2)),
    Case("matmul_large_gelu", ops.FusedMatMul(transpose_b=True, activation=A.GELU_ERF, residual=True),  # TMA
         ((4, 2048, 64), (512, 64), (512,), (4, 2048, 512), None), constant=(1, 2)),
    Case("conv_1x1_large_add_relu", ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True,  # TMA
                                                         post_activation=A.RELU),
         ((8, 64, 32, 32), (512, 64, 1, 1), (512,), (8, 512, 32, 32), None), constant=(1, 2)),
    Case("matmul_splitk", ops.FusedMatMul(residual=True), ((1, 7, 2100), (2100, 40), (40,), (1, 7, 40), None),
         constant=(1, 2)),
    Case("matmul_plain", ops.MatrixMultiply(), ((2, 3, 7, 33), (2, 3, 33, 19))),
    Case("matmul_plain_bt", ops.MatrixMultiply(transpose_b=True), ((2, 3, 7, 33), (2, 3, 19, 33))),
    Case("matmul_plain_splitk", ops.MatrixMultiply(), ((7, 2100), (2100, 40))),
    Case("matmul_layer_norm", ops.FusedMatMulLayerNorm(residual=True),  # BERT's residual projections
         ((3, 7, 33), (33, 40), (40,), (3, 7, 40), (40,), (40,)), constant=(1, 2, 4, 5)),
    Case("matmul_layer_norm_splitk", ops.FusedMatMulLayerNorm(residual=True),
         ((1, 7, 2100), (2100, 40), None, (1, 7, 40), (40,), (40,)), constant=(1, 4, 5)),
    Case("matmul_layer_norm_large", ops.FusedMatMulLayerNorm(transpose_b=True, residual=True),  # TMA
         ((4, 2048, 64), (512, 64), (512,), (4, 2048, 512), (512,), (512,)), constant=(1, 2, 4, 5)),
    Case("add_layer_norm", ops.FusedAddLayerNorm(), ((3, 7, 200), (1, 7, 200), (200,), (200,)), constant=(1, 2, 3)),
    Case("softmax", ops.Softmax(axis=-1), ((3, 5, 129),)),
    Case("layer_norm", ops.LayerNorm(axis=-1, epsilon=1e-5), ((3, 7, 200), (200,), (200,)), constant=(1, 2)),
    Case("rms_norm", ops.RMSNorm(axis=-1, epsilon=1e-6), ((3, 7, 200), (200,)), constant=(1,)),
    Case("attention", ops.Attention(scale=0.125), ((2, 3, 17, 64), (2, 3, 19, 64), (2, 3, 19, 64))),
    Case("attention_mask", ops.Attention(scale=0.125, has_mask=True),
         ((2, 3, 17, 64), (2, 3, 17, 64), (2, 3, 17, 64), (2, 1, 1, 17))),
    Case("attention_causal", ops.Attention(scale=0.125, causal=True), ((1, 2, 33, 32), (1, 2, 33, 32), (1, 2, 33, 32))),
    Case("max_pool", ops.Pooling(ops.PoolingType.MAX, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)), ((2, 13, 11, 9),)),
    Case("avg_pool", ops.Pooling(ops.PoolingType.AVERAGE, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)), ((2, 13, 10, 8),)),
    Case("global_avg", ops.GlobalPooling(ops.PoolingType.AVERAGE), ((2, 13, 7, 7),)),
    Case("pointwise", ops.FusedPointwise(("t0 = prod in0 in1", "t1 = sum t0 in2", "t2 = relu t1 0 0", "out = t2")),
         ((2, 13, 7, 5), (1, 13, 1, 1), (2, 13, 7, 5))),
]


def _random_inputs(case: Case, generator: torch.Generator) -> list[torch.Tensor | None]:
    values = []
    for shape in case.shapes:
        values.append(None if shape is None else torch.randn(shape, generator=generator))
    return values


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_cuda_tactic_matches_the_reference(case, dtype):
    inputs = _random_inputs(case, torch.Generator().manual_seed(0))
    if isinstance(case.op, ops.Attention) and case.op.has_mask:  # an additive mask with some positions masked out
        inputs[3] = torch.where(inputs[3] > 1.0, -1e4, 0.0)
    reference = get_kernel(case.op.KIND, REFERENCE_TARGET)(case.op, inputs)[0]
    entries = candidates(case.op.KIND, "cuda", case.op, case.tensors())
    assert entries, f"no CUDA tactic for {case.name}"
    on_gpu = [None if t is None else t.to("cuda", dtype) for t in inputs]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    for entry in entries:
        try:
            with torch.inference_mode():
                out = entry.fn(case.op, on_gpu)[0]
        except NotImplementedError:  # declined at run time, as the tactic timer reads it: only FP32, by 16-bit kernels
            assert dtype is torch.float32 and "tma" in entry.impl, f"{entry.impl} declined {case.name} in {dtype}"
            continue
        assert out.shape == reference.shape, f"{entry.impl}: shape {tuple(out.shape)} != {tuple(reference.shape)}"
        error = _relative_error(out, reference)
        assert error <= TOLERANCE[dtype], f"{case.name} by {entry.impl} ({dtype}): relative error {error:.2e}"



RESIDUAL_CASES = [c for c in CASES if getattr(c.op, "residual", False)]


@pytest.mark.parametrize("case", RESIDUAL_CASES, ids=[c.name for c in RESIDUAL_CASES])
def test_tactics_that_write_over_the_residual_match_the_reference(case):
    """With residual_in_place (set by plan/in_place.py) the capable tactics store their result in the residual's
    own storage, and it is still the right result."""
    inputs = _random_inputs(case, torch.Generator().manual_seed(0))
    reference = get_kernel(case.op.KIND, REFERENCE_TARGET)(case.op, inputs)[0]
    op = dataclasses.replace(case.op, residual_in_place=True)
    capable = [e for e in candidates(case.op.KIND, "cuda", case.op, case.tensors()) if e.writes_over_residual]
    assert capable, f"no tactic for {case.name} writes over its residual"
    for entry in capable:
        on_gpu = [None if t is None else t.to("cuda", torch.float16) for t in inputs]
        if on_gpu[3].dim() == 4:  # the convolutions store NHWC, as channels-last engines hold their activations
            on_gpu[3] = on_gpu[3].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = entry.fn(op, on_gpu)[0]
        assert out.data_ptr() == on_gpu[3].data_ptr(), f"{entry.impl} did not store over the residual"
        error = _relative_error(out, reference)
        assert error <= TOLERANCE[torch.float16], f"{case.name} by {entry.impl}: relative error {error:.2e}"


def test_every_cuda_tactic_is_reached_by_some_case():
    from tensorkiln.kernels.registry import _KERNELS

    candidates("convolution", "cuda", ops.Softmax(axis=-1), [])  # loads the CUDA kernel modules
    reached = {(e.kind, e.impl) for case in CASES for e in candidates(case.op.KIND, "cuda", case.op, case.tensors())}
    registered = {(kind, impl) for (kind, target, impl) in _KERNELS if target == "cuda"}
    if torch.cuda.get_device_capability() < (9, 0):  # the TMA tactics serve Hopper and later only
        registered = {(kind, impl) for kind, impl in registered if "tma" not in impl}
    # the integer tactics serve only layers an INT8 build quantized (int8_input_scale set); test_int8_kernels.py runs
    # each of them (cuBLASLt 1x1/strided/im2col/GEMM and every Triton config) against the float reference
    registered = {(kind, impl) for kind, impl in registered if "int8" not in impl}
    assert registered <= reached, f"CUDA tactics no case reaches: {sorted(registered - reached)}"
