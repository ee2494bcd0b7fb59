"""The cuBLASLt tactics (kernels/cuda/cublas.py) are plain PyTorch: torch.addmm and torch._addmm_activation reach
cuBLASLt on a GPU and run on the CPU too. So their arithmetic, their epilogue (bias, ReLU, residual add, post
activation) and their storing over the residual are checked here on CPU tensors, in CI without a GPU, against the
portable reference kernels. Where a GPU is present they run on CUDA tensors as well (and test_cuda_tactics.py
reaches them through the registry)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tensorkiln.ir import ops
from tensorkiln.ir.dtypes import DataType
from tensorkiln.ir.graph import Tensor
from tensorkiln.kernels.cuda.cublas import (_pointwise_conv_supports, _strided_pointwise_conv_supports, _supports,
                                            fused_matmul_cublaslt, pointwise_convolution_cublaslt,
                                            strided_pointwise_convolution_cublas)
from tensorkiln.kernels.registry import REFERENCE_TARGET, get_kernel

A = ops.ActivationType
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _exact_float32():
    # the reference convolution is cuDNN's on CUDA tensors, which rounds FP32 products to TF32 by default (an error
    # of about 6e-3 here); FP32 engines switch TF32 off as well (runtime/context.py)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        previous, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
EPILOGUES = [(None, None), (A.RELU, None), (None, A.RELU), (A.RELU, A.SIGMOID), (None, A.CLIP), (A.GELU_TANH, None),
             (A.GELU_ERF, None), (A.SILU, A.RELU)]  # GELU (erf) and SiLU: a kernel of their own after the GEMM


def _conv_inputs(generator, channels_last: bool = True):
    def nhwc(t):
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    return [nhwc(torch.randn(2, 40, 7, 5, generator=generator)), torch.randn(24, 40, 1, 1, generator=generator),
            torch.randn(24, generator=generator), nhwc(torch.randn(2, 24, 7, 5, generator=generator)), None]


def _strided_conv_inputs(generator):  # stride (2, 3): output 4 x 2
    return [torch.randn(2, 40, 8, 6, generator=generator).contiguous(memory_format=torch.channels_last),
            torch.randn(24, 40, 1, 1, generator=generator), torch.randn(24, generator=generator),
            torch.randn(2, 24, 4, 2, generator=generator).contiguous(memory_format=torch.channels_last), None]


def _matmul_inputs(generator):
    return [torch.randn(3, 7, 33, generator=generator), torch.randn(40, 33, generator=generator),
            torch.randn(40, generator=generator), torch.randn(3, 7, 40, generator=generator), None]


CASES = [  # (op, tactic, inputs, with a bias)
    *[(ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, activation=act, residual=residual, post_activation=post,
                            post_beta=6.0), pointwise_convolution_cublaslt, _conv_inputs, bias)
      for bias in (True, False) for residual in (False, True) for act, post in EPILOGUES],
    *[(ops.FusedMatMul(transpose_b=True, activation=act, residual=residual, post_activation=post, post_beta=6.0),
       fused_matmul_cublaslt, _matmul_inputs, bias)
      for bias in (True, False) for residual in (False, True) for act, post in EPILOGUES],
    *[(ops.FusedConvolution((2, 3), (0, 0, 0, 0), (1, 1), 1, activation=act, residual=residual, post_activation=post,
                            post_beta=6.0), strided_pointwise_convolution_cublas, _strided_conv_inputs, bias)
      for bias in (True, False) for residual in (False, True) for act, post in EPILOGUES],
]


def _id(case) -> str:
    op, bias = case[0], case[3]
    return f"{case[1].__name__}-{'bias' if bias else 'nobias'}-{op.activation and op.activation.value}-" \
           f"{'residual' if op.residual else 'alone'}-{op.post_activation and op.post_activation.value}"


def _inputs(case, device) -> list:
    op, _, make, bias = case
    inputs = [None if t is None else t.to(device) for t in make(torch.Generator().manual_seed(0))]
    if not bias:
        inputs[2] = None
    if not op.residual:
        inputs[3] = None
    return inputs


def _reference(op, inputs) -> torch.Tensor:
    op = dataclasses.replace(op, residual_in_place=False)
    inputs = [None if t is None else t.clone() for t in inputs]
    return get_kernel(op.KIND, REFERENCE_TARGET)(op, inputs)[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_cublaslt_tactic_matches_the_reference(case, device):
    op, tactic = case[:2]
    inputs = _inputs(case, device)
    expected = _reference(op, inputs)
    residual_before = None if inputs[3] is None else inputs[3].clone()
    with torch.inference_mode():
        out = tactic(op, inputs)[0]
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    if residual_before is not None:  # without residual_in_place the residual is only read
        assert torch.equal(inputs[3], residual_before)


RESIDUAL_CASES = [c for c in CASES if c[0].residual and c[1] is not strided_pointwise_convolution_cublas]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", RESIDUAL_CASES, ids=[_id(c) for c in RESIDUAL_CASES])
def test_cublaslt_tactic_stores_over_its_residual_when_allowed(case, device):
    op, tactic = case[:2]
    inputs = _inputs(case, device)
    expected = _reference(op, inputs)
    with torch.inference_mode():
        out = tactic(dataclasses.replace(op, residual_in_place=True), inputs)[0]
    assert out.data_ptr() == inputs[3].data_ptr(), "the result is not in the residual's memory"
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_a_residual_in_a_foreign_layout_gets_a_new_tensor(device):
    # an NCHW residual cannot be viewed as the [pixels, channels] matrix cuBLAS writes: the residual stays as it was
    op = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True, residual_in_place=True)
    inputs = [None if t is None else t.to(device)
              for t in _conv_inputs(torch.Generator().manual_seed(0), channels_last=False)]
    before = inputs[3].clone()
    with torch.inference_mode():
        out = pointwise_convolution_cublaslt(op, inputs)[0]
    assert out.data_ptr() != inputs[3].data_ptr() and torch.equal(inputs[3], before)
    torch.testing.assert_close(out, _reference(op, inputs), rtol=1e-4, atol=1e-4)


def _spec(shape, constant=False) -> Tensor:
    return Tensor("t", DataType.FLOAT, shape, value=np.zeros(shape, np.float32) if constant else None)


def test_what_the_cublaslt_tactics_take():
    conv = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True)
    x, w, b = _spec((1, 40, 7, 7)), _spec((24, 40, 1, 1), True), _spec((24,), True)
    assert _pointwise_conv_supports(conv, [x, w, b, _spec((1, 24, 7, 7)), None])
    assert not _pointwise_conv_supports(conv, [x, w, b, _spec((1, 24, 1, 1)), None])  # a broadcast residual
    assert _pointwise_conv_supports(dataclasses.replace(conv, activation=A.SILU), [x, w, b, _spec((1, 24, 7, 7))])
    assert not _pointwise_conv_supports(dataclasses.replace(conv, prelu=True), [x, w, b, _spec((1, 24, 7, 7))])
    assert _pointwise_conv_supports(conv, [x, w, None, _spec((1, 24, 7, 7)), None])  # no bias: one GEMM
    strided = dataclasses.replace(conv, stride=(2, 2), residual=False)
    assert _strided_pointwise_conv_supports(strided, [_spec((1, 40, 8, 8)), w, b])
    assert not _strided_pointwise_conv_supports(strided, [_spec((1, 40, 7, 7)), w, b])  # rows do not split evenly
    assert not _strided_pointwise_conv_supports(conv, [x, w, b, _spec((1, 24, 7, 7))])  # stride 1: cublaslt_1x1's
    assert not _strided_pointwise_conv_supports(dataclasses.replace(strided, pads=(1, 1, 1, 1)),
                                                [_spec((1, 40, 8, 8)), w, b])
    matmul = ops.FusedMatMul(transpose_b=True, residual=True, post_activation=A.GELU_ERF)
    a, weight, bias = _spec((3, 7, 33)), _spec((40, 33), True), _spec((40,), True)
    assert _supports(matmul, [a, weight, bias, _spec((3, 7, 40))])
    assert not _supports(matmul, [a, weight, bias, _spec((1, 7, 40))])
    assert not _supports(dataclasses.replace(matmul, transpose_b=False), [a, weight, bias, _spec((3, 7, 40))])
