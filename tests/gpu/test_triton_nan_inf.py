"""NaN and Inf through the Triton kernels of the CUDA target, against the CPU reference kernels (which
tests/test_nan_inf.py checks against onnxruntime): NaN, +Inf and -Inf must land where the reference puts them
(issue 18).

On a GPU, tl.maximum / tl.minimum / tl.max return the non-NaN operand unless asked to propagate NaN; Triton's
interpreter (tests without a GPU, see triton_support.py) computes them the same way (numpy's fmax / fmin), so these
tests fail there as they would on a GPU: a ReLU, a Clip, a Max or a max pooling that turned NaN into a number.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from triton_support import DEVICE, needs_triton, triton_module

from tensorkiln.ir import ops  # noqa: E402  (after triton_support sets TRITON_INTERPRET)
from tensorkiln.ir.ops import ActivationType as A  # noqa: E402
from tensorkiln.kernels.cpu import attention as cpu_attention  # noqa: E402
from tensorkiln.kernels.cpu import fused as cpu_fused  # noqa: E402
from tensorkiln.kernels.cpu import pooling as cpu_pooling  # noqa: E402

pytestmark = [needs_triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # numpy on inf - inf, 0 / 0

NAN, INF = float("nan"), float("inf")
SPECIALS = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 0.5, 7.0, -7.0]


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str = "", rtol: float = 1e-4) -> None:
    """NaN, +Inf and -Inf at the same positions; finite values within rtol (Triton's exp/log/erf against torch's)."""
    got, want = got.float().cpu(), want.float().cpu()
    assert got.shape == want.shape, (what, got.shape, want.shape)
    for name, test in (("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf)):
        differ = test(got) != test(want)
        assert not differ.any(), f"{what}: {name} differs at {differ.nonzero().tolist()[:8]}"
    finite = torch.isfinite(want)
    np.testing.assert_allclose(got[finite].numpy(), want[finite].numpy(), rtol=rtol, atol=1e-5, err_msg=what)


def _on_device(*tensors):
    return [t.to(DEVICE) for t in tensors]


# ---- fused pointwise programs -----------------------------------------------------------------------------------
def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Every (a, b) of SPECIALS x SPECIALS, as two [12, 12] tensors."""
    grid = list(itertools.product(SPECIALS, SPECIALS))
    a = torch.tensor([p[0] for p in grid]).reshape(len(SPECIALS), -1)
    b = torch.tensor([p[1] for p in grid]).reshape(len(SPECIALS), -1)
    return a, b


BINARY_OPCODES = ["sum", "sub", "prod", "div", "max", "min", "pow", "fmod", "mod"]
UNARY_OPCODES = ["exp", "log", "sqrt", "recip", "abs", "neg", "erf", "sin", "cos", "tan", "sinh", "cosh", "asinh",
                 "acosh", "atanh", "floor", "ceil", "round", "sign"]
ACTIVATIONS = [("relu", ""), ("clip", " -1.5 3"), ("clip", " 0 inf"), ("hard_sigmoid", " 0.2 0.5"),
               ("hard_swish", ""), ("celu", " 0.8 0"), ("softplus", ""), ("leaky_relu", " 0.1 0"), ("elu", " 1 0"),
               ("selu", " 1.6732632 1.050701"), ("thresholded_relu", " 1 0"), ("sigmoid", ""), ("tanh", ""),
               ("softsign", ""), ("scaled_tanh", " 1.5 0.5"), ("gelu_erf", ""), ("gelu_tanh", ""), ("silu", ""),
               ("mish", "")]


def _pointwise(program: tuple[str, ...], inputs, tmp_path, monkeypatch) -> torch.Tensor:
    pointwise = triton_module("pointwise")
    monkeypatch.setenv(pointwise.CACHE_ENV, str(tmp_path))
    return pointwise.fused_pointwise(program, _on_device(*inputs), block=256)


def _reference(program: tuple[str, ...], inputs) -> torch.Tensor:
    return cpu_fused.fused_pointwise(ops.FusedPointwise(program), list(inputs))[0]


@pytest.mark.parametrize("opcode", BINARY_OPCODES)
def test_binary_opcodes_on_every_pair_of_special_values(opcode, tmp_path, monkeypatch):
    """Failed before the fix for max and min (tl.maximum / tl.minimum made NaN the other operand), pow (1^NaN,
    (-1)^Inf, (-Inf)^2.5...), fmod and mod (a finite number modulo Inf) against C's rules, as torch and onnxruntime."""
    program = (f"t0 = {opcode} in0 in1", "out = t0")
    a, b = _pairs()
    assert_same(_pointwise(program, [a, b], tmp_path, monkeypatch), _reference(program, [a, b]), opcode)


@pytest.mark.parametrize("opcode", UNARY_OPCODES)
def test_unary_opcodes_on_special_values(opcode, tmp_path, monkeypatch):
    """Failed before the fix for sign: the CPU reference (torch.sign) made sign(NaN) 0, onnxruntime keeps NaN."""
    program = (f"t0 = {opcode} in0", "out = t0")
    x = torch.tensor(SPECIALS)
    assert_same(_pointwise(program, [x], tmp_path, monkeypatch), _reference(program, [x]), opcode)


@pytest.mark.parametrize("activation, arguments", ACTIVATIONS, ids=[a + b.replace(" ", "_") for a, b in ACTIVATIONS])
def test_activations_on_special_values(activation, arguments, tmp_path, monkeypatch):
    """Failed before the fix for relu, clip, hard_sigmoid and celu (NaN became a number)."""
    program = (f"t0 = {activation} in0{arguments}", "out = t0")
    x = torch.tensor(SPECIALS + [3.0, -3.0, 25.0, -25.0])
    assert_same(_pointwise(program, [x], tmp_path, monkeypatch), _reference(program, [x]), activation)


# ---- the GEMM and convolution epilogues ---------------------------------------------------------------------------
EPILOGUES = [  # (activation, alpha, beta, post activation)
    (A.RELU, 0.0, 0.0, None), (A.CLIP, 0.0, 6.0, None), (A.HARD_SIGMOID, 0.2, 0.5, None), (A.CELU, 1.0, 0.0, None),
    (A.HARD_SWISH, 0.0, 0.0, None), (A.GELU_ERF, 0.0, 0.0, None), (A.RELU, 0.0, 0.0, A.RELU),
    (None, 0.0, 0.0, A.CLIP),
]


def _fused_matmul_reference(a, b, bias, residual, activation, alpha, beta, post):
    op = ops.FusedMatMul(False, False, activation, alpha, beta, post_activation=post, post_alpha=0.0, post_beta=6.0,
                         residual=residual is not None)
    return cpu_fused.fused_matmul(op, [a, b, bias, residual, None])[0]


@pytest.mark.parametrize("activation, alpha, beta, post", EPILOGUES,
                         ids=[f"{a and a.value}_{p and p.value}" for a, _, _, p in EPILOGUES])
def test_gemm_epilogue_keeps_nan_and_inf(activation, alpha, beta, post):
    """a @ b with K = 1 and b = 1 is a itself, exactly: the epilogue sees every special value (and a bias and a
    residual holding them too). Failed before the fix for relu, clip, hard_sigmoid and celu."""
    gemm = triton_module("gemm")
    a = torch.tensor(SPECIALS).reshape(-1, 1)
    b = torch.ones(1, 5)
    bias = torch.tensor([0.0, 1.0, NAN, -INF, 0.5])
    residual = torch.zeros(len(SPECIALS), 5)
    residual[3, 1], residual[5, 4] = NAN, INF
    residual = residual if post is not None else None
    out = gemm.gemm(*_on_device(a, b), bias=bias.to(DEVICE), activation=activation, alpha=alpha, beta=beta,
                    residual=None if residual is None else residual.to(DEVICE), post_activation=post, post_beta=6.0)
    want = _fused_matmul_reference(a, b, bias, residual, activation, alpha, beta, post)
    assert_same(out, want, f"{activation} {post}")


@pytest.mark.parametrize("activation, beta", [(A.RELU, 0.0), (A.CLIP, 6.0)])
def test_convolution_epilogue_keeps_nan_and_inf(activation, beta):
    """One NaN and one Inf pixel through a 3x3 convolution with ReLU / ReLU6 (NHWC, the CUDA target's layout):
    NaN over each one's 3x3 neighbourhood where the reference has it. Failed before the fix (ReLU made it 0)."""
    conv = triton_module("conv")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 7, 7, generator=generator)
    x[0, 1, 2, 2], x[0, 2, 5, 4] = NAN, INF
    w = torch.randn(5, 4, 3, 3, generator=generator)
    bias = torch.randn(5, generator=generator)
    x_device = x.to(DEVICE).contiguous(memory_format=torch.channels_last)
    out = conv.conv2d(x_device, *_on_device(w, bias), pads=(1, 1, 1, 1), activation=activation, beta=beta)
    op = ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), 1, activation, 0.0, beta)
    want = cpu_fused.fused_convolution(op, [x, w, bias, None, None])[0]
    assert torch.isnan(want).any()
    assert_same(out, want, activation.value)


# ---- pooling ----------------------------------------------------------------------------------------------------
def _image_with_specials(channels_last: bool = True) -> torch.Tensor:
    x = torch.randn(2, 5, 9, 9, generator=torch.Generator().manual_seed(2))
    x[0, 1, 4, 4], x[1, 3, 0, 0], x[0, 2, 8, 8], x[1, 0, 3, 5] = NAN, NAN, INF, -INF
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("kernel, stride, pads", [((3, 3), (2, 2), (1, 1, 1, 1)), ((2, 2), (2, 2), (0, 0, 0, 0))])
def test_max_pooling_window_with_nan_is_nan(kernel, stride, pads):
    """Failed before the fix: tl.maximum skipped the NaN of a window."""
    pooling = triton_module("pooling")
    x = _image_with_specials()
    out = pooling.pool2d(x.to(DEVICE), is_max=True, kernel=kernel, stride=stride, pads=pads)
    op = ops.Pooling(ops.PoolingType.MAX, kernel, stride, pads, (1, 1))
    want = cpu_pooling.pooling(op, [x])[0]
    assert torch.isnan(want).any()
    assert_same(out, want, "max pool")


def test_global_max_pooling_of_a_channel_with_nan_is_nan():
    """Failed before the fix: the running max and tl.max both skipped NaN."""
    pooling = triton_module("pooling")
    x = _image_with_specials()
    out = pooling.global_pool(x.to(DEVICE), is_max=True)
    want = cpu_pooling.global_pooling(ops.GlobalPooling(ops.PoolingType.MAX), [x])[0]
    assert int(torch.isnan(want).sum()) == 2
    assert_same(out, want, "global max pool")
    average = pooling.global_pool(x.to(DEVICE), is_max=False)
    assert_same(average, cpu_pooling.global_pooling(ops.GlobalPooling(ops.PoolingType.AVERAGE), [x])[0], "average")


# ---- softmax, norms, attention ---------------------------------------------------------------------------------
def _rows_with_specials(columns: int) -> torch.Tensor:
    """Row 0: a NaN; 1: a +Inf; 2: a -Inf; 3: every value -Inf; 4: plain; 5: NaN and +Inf."""
    x = torch.randn(6, columns, generator=torch.Generator().manual_seed(3))
    x[0, 3], x[1, 5], x[2, 1], x[3, :], x[5, 0], x[5, -1] = NAN, INF, -INF, -INF, NAN, INF
    return x


@pytest.mark.parametrize("block_n", [None, 16], ids=["one_block", "looped"])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_rows_with_nan_and_inf(block_n, log):
    softmax = triton_module("softmax")
    x = _rows_with_specials(40)
    want = torch.log_softmax(x, -1) if log else torch.softmax(x, -1)
    assert_same(softmax.softmax(x.to(DEVICE), log=log, block_n=block_n), want, "softmax")


@pytest.mark.parametrize("rows", [1, 4], ids=["row_per_program", "rows_per_program"])
def test_layer_norm_and_rms_norm_rows_with_nan_and_inf(rows):
    norms = triton_module("norms")
    x = _rows_with_specials(24)
    w, b = torch.rand(24) + 0.5, torch.randn(24)
    want = torch.nn.functional.layer_norm(x, (24,), w, b, 1e-5)
    assert_same(norms.layer_norm(*_on_device(x, w, b), eps=1e-5, rows=rows), want, "layer norm")
    want = torch.nn.functional.rms_norm(x, (24,), w, 1e-6)
    assert_same(norms.rms_norm(*_on_device(x, w), eps=1e-6, rows=rows), want, "rms norm")


@pytest.mark.parametrize("mask_kind", ["float", "bool"])
def test_attention_with_nan_inf_and_fully_masked_rows(mask_kind):
    """Query row 1 NaN; key 6 +Inf in one head; query row 4 with every key masked: what the CPU kernel (the ONNX
    graph's softmax) gives. Failed before the fix: the fully masked row was zeros, not NaN."""
    attention = triton_module("attention")
    generator = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 9, 16, generator=generator) for _ in range(3))
    q[0, 0, 1, 3], k[0, 1, 6, 0] = NAN, INF
    keep = torch.ones(1, 1, 9, 9, dtype=torch.bool)
    keep[..., 4, :] = False
    mask = keep if mask_kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, -INF)
    out = attention.attention(*_on_device(q, k, v, mask), scale=0.25)
    want = cpu_attention.attention(ops.Attention(0.25, has_mask=True), [q, k, v, mask])[0]
    assert torch.isnan(want[0, :, 4]).all() and torch.isfinite(want[0, 0, 2]).all()
    assert_same(out, want, "attention")
