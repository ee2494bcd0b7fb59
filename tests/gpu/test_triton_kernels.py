"""The Triton kernels of the CUDA target (kernels/cuda/triton) against plain PyTorch references, on awkward shapes
(1, 7, 13, 33: not multiples of any block size) in FP32 and FP16 (BF16 too on a GPU).

On a CUDA machine they run on the GPU. Without one they run in Triton's CPU interpreter (TRITON_INTERPRET=1, set
here at import, before the kernel modules are imported: triton.jit reads it when it decorates a kernel), with small
shapes. Without triton (CI) every test that needs it skips; `import tensorkiln` must still work there.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
if HAS_TRITON and not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

from tensorkiln.ir import ops  # noqa: E402  (after TRITON_INTERPRET is set)
from tensorkiln.ir.ops import ActivationType as A  # noqa: E402

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if HAS_CUDA else [])
# relative tolerance: max |out - ref| over max |ref|, the reference computed in FP32 from the same (rounded) inputs
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _kernels(name: str):
    return importlib.import_module(f"tensorkiln.kernels.cuda.triton.{name}")


def _rand(*shape, dtype=torch.float32, scale=1.0, channels_last=False):
    x = (torch.randn(*shape, generator=_rand.gen) * scale).to(DEVICE, dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


_rand.gen = torch.Generator().manual_seed(0)


def _check(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == dtype
    out, ref = out.float().cpu(), ref.float().cpu()
    assert torch.isfinite(out).all() == torch.isfinite(ref).all()
    error = (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
    assert error <= TOLERANCE[dtype], f"relative error {error:.2e} > {TOLERANCE[dtype]:.0e} ({dtype})"


def _f32(*tensors):
    """Reference inputs: FP32 copies on the CPU (no TF32 convolutions or reduced-precision shortcuts there)."""
    return [None if t is None else t.float().cpu() for t in tensors]


def _cpu32(tensor):
    return _f32(tensor)[0]


# ---- GEMM ----------------------------------------------------------------------------------------------------
GEMM_CASES = [  # a shape, b shape, transpose_a, transpose_b
    ((1, 1), (1, 1), False, False),
    ((7, 13), (13, 33), False, False),
    ((2, 33, 7), (13, 7), False, True),  # batched a, shared b^T (a fully connected layer)
    ((3, 1, 13, 7), (2, 13, 33), True, False),  # broadcast batch dims, a^T
    ((13,), (13, 7), False, False),  # 1-D operand
]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a_shape, b_shape, ta, tb", GEMM_CASES)
def test_gemm_plain(dtype, a_shape, b_shape, ta, tb):
    gemm = _kernels("gemm")
    a, b = _rand(*a_shape, dtype=dtype), _rand(*b_shape, dtype=dtype)
    ra, rb = _f32(a, b)
    ref = torch.matmul(ra.transpose(-1, -2) if ta else ra, rb.transpose(-1, -2) if tb else rb)
    _check(gemm.gemm(a, b, transpose_a=ta, transpose_b=tb), ref, dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", range(3))
def test_gemm_fused_epilogues_every_config(dtype, config):
    gemm, configs = _kernels("gemm"), _kernels("configs")
    a, b = _rand(2, 33, 13, dtype=dtype), _rand(13, 7, dtype=dtype)
    bias, slope, residual = _rand(7, dtype=dtype), _rand(7, dtype=dtype), _rand(33, 7, dtype=dtype)
    ra, rb, rbias, rslope, rres = _f32(a, b, bias, slope, residual)
    y = ra @ rb + rbias
    ref = F.silu(torch.where(y >= 0, y, y * rslope) + rres)
    out = gemm.gemm(a, b, bias=bias, prelu_slope=slope, residual=residual, post_activation=A.SILU,
                    config=configs.GEMM_CONFIGS[config])
    _check(out, ref, dtype)
    out = gemm.gemm(a, b, bias=bias, activation=A.CLIP, alpha=-0.5, beta=1.5, config=configs.GEMM_CONFIGS[config])
    _check(out, torch.clamp(ra @ rb + rbias, -0.5, 1.5), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("split_k", [0, 4, 8])  # 0: the tactic's config, its split chosen per shape
@pytest.mark.parametrize("k", [13, 200, 1100])  # fewer K blocks than splits (empty splits), a few, many
def test_split_k_gemm_and_convolution(dtype, split_k, k):
    """Split-K sums every slice of K exactly once, per tile and per batch, before the epilogue runs."""
    gemm, conv, configs = _kernels("gemm"), _kernels("conv"), _kernels("configs")
    split = dataclasses.replace(configs.SPLIT_K_CONFIGS[0], split_k=split_k)
    assert configs.split_k_for(split, 1) > 1
    a, b = _rand(2, 70, k, dtype=dtype), _rand(k, 33, dtype=dtype)
    bias, residual = _rand(33, dtype=dtype), _rand(2, 70, 33, dtype=dtype)
    ra, rb, rbias, rres = _f32(a, b, bias, residual)
    out = gemm.gemm(a, b, bias=bias, activation=A.RELU, residual=residual, config=split)
    _check(out, F.relu(ra @ rb + rbias) + rres, dtype)
    x = _rand(1, k, 7, 5, dtype=dtype, channels_last=True)
    w = _rand(13, k, 3, 3, dtype=dtype, channels_last=True)
    rx, rw = _f32(x, w)
    out = conv.conv2d(x, w, None, stride=(1, 1), pads=(1, 1, 1, 1), activation=A.RELU, config=split)
    _check(out, F.relu(F.conv2d(rx, rw, None, 1, 1)), dtype)



@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["igemm", "splitk", "depthwise", "gemm", "gemm_splitk"])
def test_kernels_store_over_their_residual_when_allowed(dtype, kernel):
    """over_residual: the result lands in the residual's own storage and equals the out-of-place result; where the
    residual cannot hold it (another layout), a new tensor is made and the residual is left as it was."""
    gemm, conv, configs = _kernels("gemm"), _kernels("conv"), _kernels("configs")
    if kernel.startswith("gemm"):
        a, b, bias = _rand(2, 70, 200, dtype=dtype), _rand(200, 33, dtype=dtype), _rand(33, dtype=dtype)
        config = configs.SPLIT_K_CONFIGS[0] if kernel == "gemm_splitk" else configs.GEMM_CONFIGS[0]
        run = functools.partial(gemm.gemm, a, b, bias=bias, activation=A.RELU, config=config)
        residual, foreign = _rand(2, 70, 33, dtype=dtype), _rand(2, 33, 70, dtype=dtype).transpose(1, 2)
    else:
        depthwise = kernel == "depthwise"
        channels = 33 if depthwise else 13
        x = _rand(2, channels, 7, 5, dtype=dtype, channels_last=True)
        w = _rand(channels, 1 if depthwise else channels, 3, 3, dtype=dtype, channels_last=True)
        config = {"igemm": configs.CONV_CONFIGS[2], "splitk": configs.SPLIT_K_CONFIGS[0]}.get(kernel)
        run = functools.partial(conv.conv2d, x, w, _rand(channels, dtype=dtype), pads=(1, 1, 1, 1),
                                groups=channels if depthwise else 1, activation=A.RELU, config=config)
        residual = _rand(2, channels, 7, 5, dtype=dtype, channels_last=True)
        foreign = residual.contiguous()  # row-major: the kernels store NHWC
    expected = run(residual=residual)
    out = run(residual=residual, over_residual=True)
    assert out.data_ptr() == residual.data_ptr()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    original = foreign.clone()
    out = run(residual=foreign, over_residual=True)
    assert out.data_ptr() != foreign.data_ptr() and torch.equal(foreign, original)
    torch.testing.assert_close(out, run(residual=original), rtol=0, atol=0)


ACTIVATION_REFS = {  # independent references of every activation, (alpha, beta) as ops.Activation means them
    A.RELU: (0, 0, F.relu), A.SIGMOID: (0, 0, torch.sigmoid), A.TANH: (0, 0, torch.tanh),
    A.LEAKY_RELU: (0.1, 0, lambda x: F.leaky_relu(x, 0.1)), A.ELU: (0.7, 0, lambda x: F.elu(x, 0.7)),
    A.SELU: (1.6732632, 1.0507010, F.selu), A.SOFTPLUS: (0, 0, F.softplus), A.SOFTSIGN: (0, 0, F.softsign),
    A.CLIP: (-1, 2, lambda x: x.clamp(-1, 2)), A.HARD_SIGMOID: (0.2, 0.5, lambda x: (0.2 * x + 0.5).clamp(0, 1)),
    A.HARD_SWISH: (0, 0, F.hardswish), A.SCALED_TANH: (1.5, 0.5, lambda x: 1.5 * torch.tanh(0.5 * x)),
    A.THRESHOLDED_RELU: (1.0, 0, lambda x: torch.where(x > 1.0, x, 0.0)), A.GELU_ERF: (0, 0, F.gelu),
    A.GELU_TANH: (0, 0, lambda x: F.gelu(x, approximate="tanh")), A.SILU: (0, 0, F.silu), A.MISH: (0, 0, F.mish),
    A.CELU: (0.8, 0, lambda x: F.celu(x, 0.8)),
}


@needs_triton
def test_every_activation_in_the_epilogue():
    assert set(ACTIVATION_REFS) == set(A), "a new activation type needs a reference here"
    gemm = _kernels("gemm")
    a, b = _rand(7, 13, scale=2.0), _rand(13, 33)
    ref_y = a @ b
    for activation, (alpha, beta, ref) in ACTIVATION_REFS.items():
        out = gemm.gemm(a, b, activation=activation, alpha=alpha, beta=beta)
        error = (out - ref(ref_y)).abs().max().item()
        assert error <= 1e-4 * max(ref(ref_y).abs().max().item(), 1.0), (activation, error)



@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gelu_erf_stored_in_16_bits_is_off_by_rounding_and_the_cheap_erf_bound(dtype):
    # 16-bit outputs take a cheaper erf (epilogue._erf_16bit, |error| <= 1.5e-7): each result must be within one ulp
    # of the exact GELU (subnormals included) plus 0.5 |x| 1.5e-7, across the range where GELU bends (identity
    # weights: the epilogue sees the input itself); without the erf term, 5 of 4,096 values in the far negative
    # tail fail by a tenth of a millionth, where rounding GELU's input to 16 bits unfused errs more
    gemm = _kernels("gemm")
    x = torch.linspace(-8.0, 8.0, 4096).reshape(64, 64)
    out = gemm.gemm(x.to(DEVICE), torch.eye(64, device=DEVICE), activation=A.GELU_ERF, out_dtype=dtype)
    exact = F.gelu(x.double())
    info = torch.finfo(dtype)
    ulp = torch.maximum(exact.abs() * info.eps, torch.tensor(info.smallest_normal * info.eps, dtype=torch.float64))
    assert ((out.double().cpu() - exact).abs() <= ulp + 0.5 * x.double().abs() * 1.5e-7).all()


@needs_triton
@pytest.mark.skipif(HAS_CUDA and torch.cuda.get_device_capability() < (9, 0), reason="TMA needs Hopper or later")
@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != torch.float32])
@pytest.mark.parametrize("b_k_major", [True, False])
@pytest.mark.parametrize("warp_specialize, split_epilogue", [(False, False), (True, True)])
def test_experimental_tma_gemm_with_its_epilogue(dtype, b_k_major, warp_specialize, split_epilogue):
    # ragged M and N against the tiles, more tiles than programs (each program walks several), K over two steps
    gemm_tma, configs = _kernels("gemm_tma"), _kernels("configs")
    a, w = _rand(100, 136, dtype=dtype), _rand(72, 136, dtype=dtype, scale=0.1)
    bias, residual = _rand(72, dtype=dtype), _rand(100, 72, dtype=dtype)
    b = w if b_k_major else w.t().contiguous()
    out = gemm_tma.gemm_tma(a, b, b_k_major=b_k_major, bias=bias, activation=A.GELU_ERF, residual=residual,
                            post_activation=A.RELU, programs=3,
                            config=configs.TmaGemmConfig(configs.GemmConfig(32, 32, 32, 2, 4, 2), warp_specialize,
                                                         split_epilogue))
    ra, rw, rbias, rres = _f32(a, w, bias, residual)
    _check(out, F.relu(F.gelu(ra @ rw.t() + rbias) + rres), dtype)
    with pytest.raises(ValueError, match="multiples of 8"):
        gemm_tma.gemm_tma(a[:, :130], w[:, :130].contiguous())

@needs_triton
@pytest.mark.skipif(HAS_CUDA and torch.cuda.get_device_capability() < (9, 0), reason="TMA needs Hopper or later")
def test_tma_tactic_serves_large_1x1_convolutions(monkeypatch):
    """The registered TMA tactic: which layers it takes (large 1x1 convolutions, 16-byte aligned, no PReLU), its
    result, and its store over the residual; FP32 layers are declined at run time, as the tactic timer reads it."""
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.ir.graph import Tensor
    from tensorkiln.kernels.cuda import triton_tactics as tt

    monkeypatch.setattr(tt, "_hopper", lambda: True)  # in the interpreter too
    config = _kernels("configs").TMA_GEMM_CONFIGS[0]
    spec = lambda *shape: Tensor("t", DataType.FLOAT, shape)  # noqa: E731
    conv = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, residual=True, post_activation=A.RELU)
    big = [spec(8, 64, 32, 32), spec(512, 64, 1, 1), spec(512), spec(8, 512, 32, 32), None]  # 64 x 2 tiles
    assert tt._tma_conv_ok(conv, big, config)
    assert not tt._tma_conv_ok(conv, [spec(1, 64, 32, 32), *big[1:3], spec(1, 512, 32, 32), None], config)  # batch 1
    assert not tt._tma_conv_ok(conv, [spec(8, 60, 32, 32), spec(512, 60, 1, 1), *big[2:]], config)  # K % 8
    assert not tt._tma_conv_ok(dataclasses.replace(conv, stride=(2, 2)), big, config)
    assert not tt._tma_conv_ok(dataclasses.replace(conv, prelu=True), big, config)
    assert not tt._tma_conv_ok(conv, [big[0], spec(500, 64, 1, 1), spec(500), spec(8, 500, 32, 32), None], config)

    dtype = torch.float16
    x, w, bias = _rand(8, 64, 32, 32, dtype=dtype, channels_last=True), _rand(512, 64, 1, 1, dtype=dtype, scale=0.1), \
        _rand(512, dtype=dtype)
    residual = _rand(8, 512, 32, 32, dtype=dtype, channels_last=True)
    rx, rw, rb, rres = _f32(x, w, bias, residual)
    expected = F.relu(F.conv2d(rx, rw, rb) + rres)
    out = tt.pointwise_convolution_tma(dataclasses.replace(conv, residual_in_place=True), [x, w, bias, residual],
                                       config)[0]
    assert out.data_ptr() == residual.data_ptr() and out.is_contiguous(memory_format=torch.channels_last)
    _check(out, expected, dtype)
    relu = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, activation=A.RELU)  # NCHW input: rows copied
    _check(tt.pointwise_convolution_tma(relu, [x.contiguous(), w, bias], config)[0], F.relu(F.conv2d(rx, rw, rb)),
           dtype)
    with pytest.raises(NotImplementedError, match="FP16/BF16"):
        tt.pointwise_convolution_tma(relu, [x.float(), w.float(), bias.float()], config)


# ---- convolution ---------------------------------------------------------------------------------------------
CONV_CASES = [  # x shape, weight shape, stride, pads (h_begin, w_begin, h_end, w_end), dilation
    ((1, 1, 1, 1), (1, 1, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((2, 7, 13, 11), (13, 7, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 3, 13, 13), (33, 3, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2)),  # asymmetric pads, stride, dilation
    ((2, 33, 7, 5), (7, 33, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # pointwise conv, C > BLOCK_K
]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, stride, pads, dilation", CONV_CASES)
def test_conv2d_implicit_gemm(dtype, channels_last, x_shape, w_shape, stride, pads, dilation):
    conv = _kernels("conv")
    x = _rand(*x_shape, dtype=dtype, channels_last=channels_last)
    w = _rand(*w_shape, dtype=dtype, channels_last=channels_last)
    bias = _rand(w_shape[0], dtype=dtype)
    rx, rw, rbias = _f32(x, w, bias)
    ref = F.conv2d(F.pad(rx, (pads[1], pads[3], pads[0], pads[2])), rw, rbias, stride, 0, dilation)
    residual = _rand(*ref.shape, dtype=dtype)
    out = conv.conv2d(x, w, bias, stride=stride, pads=pads, dilation=dilation, activation=A.RELU,
                      residual=residual, post_activation=A.LEAKY_RELU, post_alpha=0.1)
    _check(out, F.leaky_relu(F.relu(ref) + _cpu32(residual), 0.1), dtype)
    assert out.is_contiguous(memory_format=torch.channels_last)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", range(3))
def test_conv2d_every_config_with_prelu(dtype, config):
    conv, configs = _kernels("conv"), _kernels("configs")
    x, w = _rand(2, 13, 7, 9, dtype=dtype, channels_last=True), _rand(33, 13, 3, 3, dtype=dtype, channels_last=True)
    slope = _rand(33, 1, 1, dtype=dtype)
    rx, rw, rslope = _f32(x, w, slope)
    ref = F.conv2d(rx, rw, None, 2, 1)
    out = conv.conv2d(x, w, None, stride=(2, 2), pads=(1, 1, 1, 1), prelu_slope=slope,
                      config=configs.CONV_CONFIGS[config])
    _check(out, torch.where(ref >= 0, ref, ref * rslope), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels, multiplier, stride, pads, dilation", [
    (1, 1, (1, 1), (0, 0, 0, 0), (1, 1)), (13, 1, (2, 2), (1, 1, 1, 1), (1, 1)),
    (7, 2, (1, 2), (2, 0, 1, 1), (2, 1)), (33, 1, (1, 1), (1, 1, 1, 1), (1, 1))])
def test_depthwise_conv2d(dtype, channels, multiplier, stride, pads, dilation):
    conv, configs = _kernels("conv"), _kernels("configs")
    x = _rand(2, channels, 13, 7, dtype=dtype, channels_last=True)
    w, bias = _rand(channels * multiplier, 1, 3, 3, dtype=dtype), _rand(channels * multiplier, dtype=dtype)
    rx, rw, rbias = _f32(x, w, bias)
    ref = F.conv2d(F.pad(rx, (pads[1], pads[3], pads[0], pads[2])), rw, rbias, stride, 0, dilation, channels)
    for config in configs.DEPTHWISE_CONFIGS:
        out = conv.conv2d(x, w, bias, stride=stride, pads=pads, dilation=dilation, groups=channels,
                          activation=A.CLIP, alpha=0.0, beta=6.0, config=config)
        _check(out, ref.clamp(0, 6), dtype)


@needs_triton
def test_conv2d_rejects_grouped_convolution():
    conv = _kernels("conv")
    with pytest.raises(ValueError, match="groups"):
        conv.conv2d(_rand(1, 4, 5, 5), _rand(4, 2, 3, 3), groups=2)


# ---- row kernels -----------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, block_n", [((1,), None), ((3, 7), None), ((2, 5, 33), None), ((2, 5, 33), 16),
                                            ((2, 9000), None)])
def test_softmax(dtype, shape, block_n):
    softmax = _kernels("softmax")
    x = _rand(*shape, dtype=dtype, scale=3.0)
    _check(softmax.softmax(x, block_n=block_n), torch.softmax(_cpu32(x), -1), dtype)
    _check(softmax.softmax(x, log=True, block_n=block_n), torch.log_softmax(_cpu32(x), -1), dtype)


@needs_triton
def test_softmax_of_masked_rows():
    """-inf entries (masked scores) in a first block must not poison the running sum of a looped row."""
    softmax = _kernels("softmax")
    x = _rand(3, 40)
    x[:, :20] = float("-inf")
    _check(softmax.softmax(x, block_n=16), torch.softmax(x, -1), torch.float32)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis, block_n, rows", [
    ((1, 1), -1, None, 1), ((3, 7), -1, None, 1), ((2, 5, 33), -1, None, 1), ((2, 5, 33), -2, None, 1),
    ((2, 5, 33), -1, 16, 1),
    ((1, 1), -1, None, 4), ((2, 5, 33), -1, None, 4), ((2, 5, 33), -2, None, 16), ((3, 7, 768), -1, None, 4)])
def test_layer_norm_and_rms_norm(dtype, shape, axis, block_n, rows):
    norms = _kernels("norms")
    x = _rand(*shape, dtype=dtype, scale=2.0) + 1.0
    normalized = shape[axis % len(shape):]
    w, b = _rand(*normalized, dtype=dtype), _rand(normalized[-1], dtype=dtype)
    rx, rw, rb = _f32(x, w, b)
    _check(norms.layer_norm(x, w, b, axis=axis, eps=1e-5, block_n=block_n, rows=rows),
           F.layer_norm(rx, normalized, rw, rb.expand(normalized), 1e-5), dtype)
    _check(norms.layer_norm(x, w, None, axis=axis, block_n=block_n, rows=rows),
           F.layer_norm(rx, normalized, rw, None), dtype)
    _check(norms.rms_norm(x, w, axis=axis, eps=1e-6, block_n=block_n, rows=rows),
           F.rms_norm(rx, normalized, rw, 1e-6), dtype)
    _check(norms.rms_norm(x, None, axis=axis, block_n=block_n, rows=rows), F.rms_norm(rx, normalized, None, 1e-6),
           dtype)


@needs_triton
def test_tiled_norms_refuse_rows_longer_than_their_tile():
    norms = _kernels("norms")
    with pytest.raises(ValueError, match="longer than"):
        norms.layer_norm(_rand(2, 5000), _rand(5000), rows=4)


# ---- pooling ---------------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, pads, dilation", [((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
                                                             ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
                                                             ((2, 3), (1, 2), (0, 1, 0, 1), (2, 1))])
def test_pooling_against_torch(dtype, kernel, stride, pads, dilation):
    pooling = _kernels("pooling")
    x = _rand(2, 13, 11, 7, dtype=dtype, channels_last=True)
    padding = (pads[0], pads[1])  # symmetric here, as torch takes them
    ref = F.max_pool2d(_cpu32(x), kernel, stride, padding, dilation)
    _check(pooling.pool2d(x, is_max=True, kernel=kernel, stride=stride, pads=pads, dilation=dilation), ref, dtype)
    if dilation == (1, 1):
        for include_pad in (False, True):
            ref = F.avg_pool2d(_cpu32(x), kernel, stride, padding, count_include_pad=include_pad)
            out = pooling.pool2d(x, is_max=False, kernel=kernel, stride=stride, pads=pads,
                                 count_include_pad=include_pad)
            _check(out, ref, dtype)


@needs_triton
@pytest.mark.parametrize("pool_type", [ops.PoolingType.MAX, ops.PoolingType.AVERAGE])
@pytest.mark.parametrize("include_pad", [False, True])
def test_pooling_ceil_mode_and_asymmetric_pads(pool_type, include_pad):
    """ONNX semantics (ceil-mode overhang not counted) against the CPU reference kernel."""
    from tensorkiln.kernels.cpu.pooling import pooling as reference

    pooling = _kernels("pooling")
    op = ops.Pooling(pool_type, (3, 2), (2, 2), (1, 0, 2, 1), (1, 1), True, include_pad)
    x = _rand(2, 7, 13, 10, channels_last=True)
    out = pooling.pool2d(x, is_max=pool_type is ops.PoolingType.MAX, kernel=op.kernel, stride=op.stride,
                         pads=op.pads, dilation=op.dilation, ceil_mode=True, count_include_pad=include_pad)
    _check(out, reference(op, [_cpu32(x)])[0], torch.float32)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 13, 7, 5), (2, 70, 33), (1, 7, 9, 13)])
def test_global_pooling(dtype, shape):
    pooling = _kernels("pooling")
    x = _rand(*shape, dtype=dtype, channels_last=True)
    dims = tuple(range(2, x.dim()))
    _check(pooling.global_pool(x, is_max=False), _cpu32(x).mean(dims, keepdim=True), dtype)
    _check(pooling.global_pool(x, is_max=True), _cpu32(x).amax(dims, keepdim=True), dtype)


# ---- attention -------------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sq, sk, d, dv", [(1, 1, 7, 7), (13, 33, 16, 7), (33, 13, 33, 16), (70, 70, 8, 8)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "float", "bool", "padding"])
def test_attention(dtype, sq, sk, d, dv, causal, mask_kind):
    attention = _kernels("attention")
    q, k, v = _rand(2, 3, sq, d, dtype=dtype), _rand(2, 1, sk, d, dtype=dtype), _rand(2, 3, sk, dv, dtype=dtype)
    mask = None
    if mask_kind == "float":
        mask = _rand(sq, sk, dtype=dtype)
    elif mask_kind == "bool":
        mask = (torch.rand(2, 1, sq, sk, generator=_rand.gen) > 0.3).to(DEVICE)
        mask[..., 0] = True  # every row keeps a key (fully masked rows differ between implementations)
    elif mask_kind == "padding":  # BERT's: one additive row per sequence, broadcast over heads and queries
        mask = torch.where(torch.arange(sk) < torch.tensor([[sk], [sk // 2 + 1]]), 0.0, -1e4)
        mask = mask.view(2, 1, 1, sk).to(DEVICE, dtype)
    rq, rk, rv = _f32(q, k, v)
    scores = rq @ rk.transpose(-1, -2) * 0.3
    if mask is not None:
        scores = scores + (_cpu32(mask) if mask.dtype != torch.bool else torch.zeros(mask.shape)
                           .masked_fill(~mask.cpu(), float("-inf")))
    if causal:
        scores = scores.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(1), float("-inf"))
    ref = torch.softmax(scores, -1) @ rv
    _check(attention.attention(q, k, v, mask, scale=0.3, causal=causal), ref, dtype)


# ---- fused pointwise -----------------------------------------------------------------------------------------
POINTWISE_PROGRAMS = [
    (("t0 = prod in0 in1", "t1 = sum t0 in2", "t2 = relu t1", "out = t2"),
     lambda a, b, c: torch.relu(a * b + c)),
    (("t0 = sub in0 in2", "t1 = div t0 in1", "t2 = gelu_tanh t1", "t3 = leaky_relu t2 0.2 0", "out = t3"),
     lambda a, b, c: F.leaky_relu(F.gelu((a - c) / b, approximate="tanh"), 0.2)),
    (("t0 = abs in0", "t1 = sqrt t0", "t2 = max t1 in2", "t3 = exp t2", "t4 = log t3", "t5 = neg t4",
      "t6 = clip t5 -1.5 inf", "out = t6"),
     lambda a, b, c: torch.clamp(-torch.log(torch.exp(torch.maximum(a.abs().sqrt(), c))), -1.5)),
    (("t0 = pow in0 in1", "t1 = fmod t0 in2", "t2 = mod in0 in2", "t3 = sum t1 t2", "t4 = round t3",
      "t5 = sign t4", "t6 = prod t5 t3", "out = t6"),
     lambda a, b, c: torch.sign(torch.round(torch.fmod(a ** b, c) + torch.remainder(a, c)))
     * (torch.fmod(a ** b, c) + torch.remainder(a, c))),
]

DISCONTINUOUS_PROGRAM = 3


@needs_triton
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on pow/log of negatives: NaN, as torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", range(len(POINTWISE_PROGRAMS)))
def test_fused_pointwise(dtype, channels_last, case, tmp_path, monkeypatch):
    pointwise = _kernels("pointwise")
    monkeypatch.setenv(pointwise.CACHE_ENV, str(tmp_path))
    pointwise.load_kernel.cache_clear()
    program, ref = POINTWISE_PROGRAMS[case]
    a = _rand(2, 7, 5, 13, dtype=dtype, channels_last=channels_last)
    b = torch.randint(1, 4, (7, 1, 1), generator=_rand.gen).to(DEVICE, dtype)  # integral exponents for pow
    c = (_rand(13, dtype=dtype) + 3.0)
    out = pointwise.fused_pointwise(program, [a, b, c], block=256)
    if case == DISCONTINUOUS_PROGRAM and dtype != torch.float32:
        # fmod, round and sign jump: an input within rounding of a jump lands on the other side of it (libdevice's
        # pow against torch's), so a few elements may differ by a step; every other one must match
        expected = ref(*_f32(a, b, c))
        close = (out.float().cpu() - expected.cpu()).abs() <= TOLERANCE[dtype] * expected.abs().max().cpu()
        assert close.float().mean() >= 0.99, f"{int((~close).sum())} of {close.numel()} elements differ"
    else:
        _check(out, ref(*_f32(a, b, c)), dtype)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    sources = list(tmp_path.glob("pointwise_*.py"))
    assert len(sources) == 1 and program[0] in sources[0].read_text()  # the source came from the cache dir


@needs_triton
def test_fused_pointwise_rejects_what_it_cannot_render():
    pointwise = _kernels("pointwise")
    assert pointwise.unsupported_reason(("t0 = sum in0 in1", "out = t0")) is None
    assert "equal" in pointwise.unsupported_reason(("t0 = equal in0 in1", "out = t0"))
    assert "unknown opcode" in pointwise.unsupported_reason(("t0 = __import__ in0", "out = t0"))
    with pytest.raises(ValueError, match="cannot be compiled"):
        pointwise.generate_source(("t0 = isnan in0", "out = t0"), (True,), 1)


# ---- the tactics: registration, predicates, and the kernels behind them ------------------------------------------
def _layer_inputs(*specs):
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.ir.graph import Tensor

    return [None if s is None else Tensor(f"t{i}", DataType(s[1]) if len(s) > 1 else DataType.FLOAT, s[0])
            for i, s in enumerate(specs)]


def _impls(op, inputs) -> set[str]:
    from tensorkiln.kernels.registry import candidates

    return {e.impl for e in candidates(op.KIND, "cuda", op, inputs)}


def _triton_serves(op, *specs) -> bool:
    return any(impl.startswith("triton") for impl in _impls(op, _layer_inputs(*specs)))


@needs_triton
def test_tactic_predicates():
    conv = ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), 1, activation=A.RELU)
    x, w = ((1, 8, 9, 9),), ((16, 8, 3, 3),)
    impls = _impls(conv, _layer_inputs(x, w, ((16,),), None, None))
    assert {"torch", "triton_igemm_bm128_bn128_bk32_w8_s3"} <= impls and not any("depthwise" in i for i in impls)
    depthwise = ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), 8)
    impls = _impls(depthwise, _layer_inputs(x, ((8, 1, 3, 3),), None, None, None))
    assert any("depthwise" in i for i in impls) and not any("igemm" in i for i in impls)
    assert not _triton_serves(ops.Convolution((1, 1), (0, 0, 0, 0), (1, 1), 2), x, ((16, 4, 1, 1),))  # grouped
    assert not _triton_serves(ops.Convolution((1, 1, 1), (0,) * 6, (1, 1, 1)), ((1, 2, 3, 3, 3),), ((2, 2, 1, 1, 1),))
    assert _triton_serves(ops.MatrixMultiply(), ((7, 13),), ((13, 5),))
    assert not _triton_serves(ops.MatrixMultiply(), ((7, 13), "int64"), ((13, 5), "int64"))
    assert not _triton_serves(ops.FusedMatMul(), ((7, 13),), ((13, 5),), ((7, 5),))  # a bias per element
    assert _triton_serves(ops.FusedMatMul(), ((7, 13),), ((13, 5),), ((1, 5),))
    assert not _triton_serves(ops.Softmax(axis=0), ((7, 13),))
    assert _triton_serves(ops.Softmax(axis=-1), ((7, 13),))
    assert not _triton_serves(ops.Pooling(ops.PoolingType.LP, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)), ((1, 2, 4, 4),))
    assert not _triton_serves(ops.FusedPointwise(("t0 = equal in0 in1", "out = t0")), ((4,),), ((4,),))
    assert _triton_serves(ops.FusedPointwise(("t0 = sum in0 in1", "out = t0")), ((4,),), ((4,),))
    assert not _triton_serves(ops.Attention(scale=1.0), *[((1, 4, 512),)] * 3)  # head dim over MAX_HEAD_DIM
    # split-K only where the output has too few tiles to fill the GPU and K is long enough to split
    small = _impls(conv, _layer_inputs(((1, 512, 7, 7),), ((512, 512, 3, 3),), ((512,),), None, None))
    assert "triton_splitk_bm64_bn64_bk64_w4_s3_kauto" in small
    assert not any("splitk" in i for i in _impls(conv, _layer_inputs(((32, 512, 7, 7),), ((512, 512, 3, 3),),
                                                                      ((512,),), None, None)))
    assert not any("splitk" in i for i in _impls(conv, _layer_inputs(x, ((16, 8, 1, 1),), ((16,),), None, None)))
    bert_b1 = _impls(ops.FusedMatMul(), _layer_inputs(((1, 128, 3072),), ((3072, 768),), ((768,),), None, None))
    bert_b128 = _impls(ops.FusedMatMul(), _layer_inputs(((128, 128, 3072),), ((3072, 768),), ((768,),), None, None))
    assert any("splitk" in i for i in bert_b1) and not any("splitk" in i for i in bert_b128)
    transposed = _impls(ops.MatrixMultiply(transpose_a=True, transpose_b=True),
                        _layer_inputs(((4096, 16),), ((16, 4096),)))
    assert any("splitk" in i for i in transposed)  # read through the transposes: M = N = 16, K = 4096


@needs_triton
def test_tactic_kernels_match_the_reference_kernels():
    """Each tactic's fn(op, inputs), fed as the runtime feeds it, against the CPU reference kernel of its kind."""
    from tensorkiln.kernels.registry import get_kernel

    cases = [
        (ops.FusedConvolution((2, 1), (1, 0, 1, 1), (1, 1), 1, activation=None, prelu=True, residual=True,
                              post_activation=A.RELU),
         [_rand(1, 7, 9, 8, channels_last=True), _rand(13, 7, 3, 3, channels_last=True), _rand(13), "residual",
          _rand(13, 1, 1)], "triton_igemm_bm64_bn64_bk32_w4_s4"),
        (ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), 7, activation=A.HARD_SWISH),
         [_rand(1, 7, 9, 8, channels_last=True), _rand(7, 1, 3, 3, channels_last=True), _rand(7), None, None],
         "triton_depthwise_bp32_bc64_w4"),
        (ops.FusedMatMul(transpose_b=True, activation=A.GELU_ERF, residual=True),
         [_rand(2, 7, 13), _rand(33, 13), _rand(33), "residual", None], "triton_gemm_bm64_bn64_bk32_w4_s4"),
        (ops.Attention(scale=0.25, has_mask=True, causal=True),
         [_rand(2, 13, 16), _rand(2, 13, 16), _rand(2, 13, 16), _rand(13, 13)], "triton_flash_bm64_bn64_w4_s3"),
        (ops.LayerNorm(axis=-1, epsilon=1e-5), [_rand(3, 33), _rand(33), _rand(33)], "triton_row_auto"),
        (ops.GlobalPooling(ops.PoolingType.AVERAGE), [_rand(2, 7, 5, 5, channels_last=True)],
         "triton_nhwc_bp32_bc64_w4"),
        (ops.FusedPointwise(("t0 = sum in0 in1", "t1 = tanh t0", "out = t1")), [_rand(3, 7), _rand(7)],
         "triton_generated_b1024_w4"),
    ]
    for op, inputs, impl in cases:
        if "residual" in inputs:  # the residual has the output's shape: take it from the reference
            plain = [None if isinstance(t, str) else t for t in inputs]
            shape = get_kernel(op.KIND)(dataclasses.replace(op, residual=False), plain)[0].shape
            inputs[inputs.index("residual")] = _rand(*shape)
        ref = get_kernel(op.KIND)(op, [None if t is None else t.cpu() for t in inputs])[0]
        _check(get_kernel(op.KIND, "cuda", impl)(op, inputs)[0], ref, torch.float32)


def test_tensorkiln_imports_and_loads_cuda_kernels_without_triton():
    """On a machine without triton (CI), importing tensorkiln and loading the CUDA kernels registers no Triton
    tactic, and never imports triton."""
    script = textwrap.dedent("""
        import importlib.abc, sys
        class NoTriton(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ModuleNotFoundError("triton is hidden by this test")
        sys.meta_path.insert(0, NoTriton())
        import tensorkiln
        from tensorkiln.kernels.registry import candidates, _load_builtin_kernels
        from tensorkiln.ir import ops
        _load_builtin_kernels("cuda")
        from tensorkiln.kernels.cuda import triton_tactics
        assert not triton_tactics.TRITON_AVAILABLE
        assert "triton" not in sys.modules
        print("ok")
    """)
    env = {**os.environ}
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
