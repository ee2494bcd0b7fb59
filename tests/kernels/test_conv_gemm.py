"""1-D convolutions as one matrix product (kernels/cpu/conv_gemm.py, the `torch_gemm` tactic): the kernel and its
bound call agree with torch's conv1d on awkward shapes (prime sizes, a single output step, asymmetric pads, strides,
dilations, a kernel as long as the input), with the fused epilogue; the tactic serves only what it can."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tensorkiln.ir import ops
from tensorkiln.ir.ops import ActivationType
from tensorkiln.kernels.cpu.bound import BoundInput, bind_kernel
from tensorkiln.kernels.cpu.conv_gemm import _serves, convolution_gemm, fused_convolution_gemm

ROW = torch.contiguous_format
# (in channels, length, out channels, kernel, stride, pads (begin, end), dilation)
SHAPES = [
    (129, 3, 128, 3, 1, (1, 1), 1),  # Silero's first encoder layer
    (1, 576, 258, 256, 128, (0, 0), 1),  # its STFT
    (64, 1, 128, 3, 1, (1, 1), 1),  # one step
    (7, 13, 5, 3, 2, (0, 2), 2),  # asymmetric pads, stride, dilation
    (3, 5, 2, 5, 1, (0, 0), 1),  # the kernel spans the input
]


def _spec(tensor, weight=False):
    return BoundInput(tuple(tensor.shape), tensor.dtype, tensor if weight else None, ROW)


def _reference(x, weight, bias, stride, pads, dilation):
    return F.conv1d(F.pad(x, list(pads)), weight, bias, stride, 0, dilation)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_plain_convolution_matches_conv1d(shape):
    channels, length, out, kernel_size, stride, pads, dilation = shape
    torch.manual_seed(0)
    x, weight, bias = torch.randn(1, channels, length), torch.randn(out, channels, kernel_size), torch.randn(out)
    op = ops.Convolution((stride,), pads, (dilation,), 1)
    expected = _reference(x, weight, bias, stride, pads, dilation)
    torch.testing.assert_close(convolution_gemm(op, [x, weight, bias])[0], expected, rtol=1e-5, atol=1e-4)
    call = bind_kernel("convolution", "torch_gemm", op, [_spec(x), _spec(weight, True), _spec(bias, True)],
                       [_spec(expected)])
    result = call([x, weight, bias])[0]
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-4)
    assert result.is_contiguous()
    no_bias = bind_kernel("convolution", "torch_gemm", op, [_spec(x), _spec(weight, True)], [_spec(expected)])
    torch.testing.assert_close(no_bias([x, weight])[0], expected - bias[:, None], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("form", ["relu", "sigmoid", "residual_relu"])
def test_fused_convolution_matches_conv1d_and_epilogue(form):
    torch.manual_seed(1)
    x, weight, bias = torch.randn(1, 11, 7), torch.randn(6, 11, 3), torch.randn(6)
    residual = torch.randn(1, 6, 7)
    activation = {"relu": ActivationType.RELU, "sigmoid": ActivationType.SIGMOID}.get(form)
    op = ops.FusedConvolution((1,), (1, 1), (1,), 1, activation=activation, residual=form == "residual_relu",
                              post_activation=ActivationType.RELU if form == "residual_relu" else None)
    y = F.conv1d(x, weight, bias, 1, 1)
    expected = {"relu": torch.relu(y), "sigmoid": torch.sigmoid(y), "residual_relu": torch.relu(y + residual)}[form]
    args = [x, weight, bias, residual if op.residual else None, None]
    torch.testing.assert_close(fused_convolution_gemm(op, list(args))[0], expected, rtol=1e-5, atol=1e-5)
    specs = [_spec(x), _spec(weight, True), _spec(bias, True), _spec(residual) if op.residual else None, None]
    call = bind_kernel("fused_convolution", "torch_gemm", op, specs, [_spec(expected)])
    kept = residual.clone()
    torch.testing.assert_close(call(list(args))[0], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(residual, kept)


def test_serves_only_single_sequence_1d_without_groups():
    one = ops.Convolution((1,), (0, 0), (1,), 1)
    x, weight = torch.empty(1, 4, 9), torch.empty(2, 4, 3)
    assert _serves(one, [x, weight])
    assert not _serves(one, [torch.empty(2, 4, 9), weight])  # batch 2
    assert not _serves(ops.Convolution((1,), (0, 0), (1,), 2), [x, torch.empty(2, 2, 3)])  # groups
    assert not _serves(ops.Convolution((1, 1), (0, 0, 0, 0), (1, 1), 1),
                       [torch.empty(1, 4, 9, 9), torch.empty(2, 4, 3, 3)])  # 2-D
