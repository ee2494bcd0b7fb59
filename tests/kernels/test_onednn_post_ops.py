"""Epilogue stages computed inside oneDNN's convolution (kernels/cpu/onednn_post_ops.py): the fused kernel and its
bound call agree with the plain reference (torch's NCHW convolution, then the activation and the residual add as
separate torch calls), NaN and infinities included; the stages oneDNN would get wrong (ReLU, Clip: NaN turned into 0)
stay with the epilogue."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tensorkiln.ir import ops
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.kernels.cpu.bound import BoundInput, bind_kernel
from tensorkiln.kernels.cpu.fused import fused_convolution
from tensorkiln.kernels.cpu.onednn_post_ops import plan_post_ops

CL = torch.channels_last
REFERENCE = {
    None: lambda y: y,
    A.SIGMOID: torch.sigmoid,
    A.TANH: torch.tanh,
    A.HARD_SWISH: F.hardswish,
    A.SILU: F.silu,
    A.LEAKY_RELU: lambda y: F.leaky_relu(y, 0.1),
    A.RELU: torch.relu,
    A.CLIP: lambda y: y.clamp(0.0, 6.0),
}
ALPHA_BETA = {A.LEAKY_RELU: (0.1, 0.0), A.CLIP: (0.0, 6.0)}


def _inputs(channels=(7, 5), size=(11, 13), special=True):
    torch.manual_seed(0)
    x = torch.randn(1, channels[0], *size)
    if special:  # a NaN, +inf and -inf, each reaching a few output pixels
        x[0, 0, 2, 3], x[0, 1, 6, 6], x[0, 2, 9, 1] = float("nan"), float("inf"), float("-inf")
    weight, bias = torch.randn(channels[1], channels[0], 3, 3), torch.randn(channels[1])
    residual = torch.randn(1, channels[1], *size)
    return x, weight, bias, residual


def _reference(op, x, weight, bias, residual):
    y = REFERENCE[op.activation](F.conv2d(x, weight, bias, 1, 1))
    if op.residual:
        y = y + residual
    return REFERENCE[op.post_activation](y)


def _op(activation=None, residual=False, post=None):
    alpha, beta = ALPHA_BETA.get(activation, (0.0, 0.0))
    post_alpha, post_beta = ALPHA_BETA.get(post, (0.0, 0.0))
    return ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), 1, activation=activation, alpha=alpha, beta=beta,
                                residual=residual, post_activation=post, post_alpha=post_alpha, post_beta=post_beta)


def _assert_same(actual, expected):
    assert torch.equal(torch.isnan(actual), torch.isnan(expected))  # NaN where the reference has NaN, only there
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5, equal_nan=True)


FORMS = [(activation, False, None) for activation in REFERENCE] + [
    (None, True, None), (None, True, A.RELU), (None, True, A.SIGMOID), (A.HARD_SWISH, True, A.RELU),
    (A.RELU, True, None)]


@pytest.mark.parametrize("form", FORMS, ids=lambda f: "-".join(str(getattr(p, "value", p)) for p in f))
def test_fused_kernel_and_bound_call_match_the_reference(form):
    op = _op(*form)
    x, weight, bias, residual = _inputs()
    expected = _reference(op, x, weight, bias, residual)
    nhwc = [x.contiguous(memory_format=CL), weight, bias, residual.contiguous(memory_format=CL) if op.residual
            else None, None]
    kept = [t if t is None else t.clone() for t in nhwc]
    with torch.inference_mode():
        _assert_same(fused_convolution(op, list(nhwc))[0], expected)
    specs = [BoundInput(tuple(x.shape), x.dtype, None, CL), BoundInput(tuple(weight.shape), weight.dtype, weight, CL),
             BoundInput((5,), bias.dtype, bias, torch.contiguous_format),
             BoundInput(tuple(residual.shape), residual.dtype, None, CL) if op.residual else None, None]
    call = bind_kernel("fused_convolution", "torch", op, specs, [BoundInput(tuple(expected.shape), expected.dtype,
                                                                            None, CL)])
    with torch.inference_mode():
        _assert_same(call(list(nhwc))[0], expected)
        if op.residual:  # a residual that arrives NCHW: the plain convolution and the whole epilogue
            _assert_same(call([nhwc[0], weight, bias, residual.contiguous(), None])[0], expected)
    for given, copy in zip(nhwc, kept):
        assert given is None or torch.equal(given.nan_to_num(), copy.nan_to_num())  # inputs left alone


def test_what_onednn_takes():
    fusable = {A.SIGMOID, A.TANH, A.HARD_SWISH, A.SILU, A.LEAKY_RELU}
    for activation in REFERENCE:
        post = plan_post_ops(_op(activation), residual_fits=True)
        assert (post.unary != "none") == (activation in fusable), activation
        assert post.rest.activation is (None if activation in fusable else activation)
    assert plan_post_ops(dataclasses.replace(_op(A.LEAKY_RELU), alpha=0.0), True).unary == "none"  # a max with 0
    residual = plan_post_ops(_op(None, True, A.RELU), residual_fits=True)
    assert residual.add_residual and not residual.rest.residual and residual.rest.post_activation is A.RELU
    assert not plan_post_ops(_op(None, True, A.RELU), residual_fits=False).add_residual  # broadcast: the epilogue's
    assert not plan_post_ops(_op(A.HARD_SWISH, True), residual_fits=True).add_residual  # the add comes after it
    prelu = dataclasses.replace(_op(), prelu=True, residual=True)
    assert plan_post_ops(prelu, True) == (False, "none", [], prelu)


def test_broadcast_residual_is_added_by_the_epilogue():
    op = _op(None, True, None)
    x, weight, bias, _ = _inputs(special=False)
    residual = torch.randn(1, 5, 1, 13)
    nhwc = [x.contiguous(memory_format=CL), weight, bias, residual, None]
    with torch.inference_mode():
        _assert_same(fused_convolution(op, nhwc)[0], F.conv2d(x, weight, bias, 1, 1) + residual)
