"""The Triton kernels of the CUDA target (kernels/cuda/triton) against plain PyTorch references, on awkward shapes
(1, 7, 13, 33: not multiples of any block size) in FP32 and FP16 (BF16 too on a GPU). Where they run:
triton_support.py. The tactics built on them: test_triton_tactics.py.
"""
from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F
from triton_support import (DEVICE, DTYPES, HAS_CUDA, TOLERANCE, check, cpu32, f32, needs_triton, rand,
                            triton_module)

from tensorkiln.ir import ops  # noqa: E402  (after triton_support sets TRITON_INTERPRET)
from tensorkiln.ir.ops import ActivationType as A  # noqa: E402


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
    gemm = triton_module("gemm")
    a, b = rand(*a_shape, dtype=dtype), rand(*b_shape, dtype=dtype)
    ra, rb = f32(a, b)
    ref = torch.matmul(ra.transpose(-1, -2) if ta else ra, rb.transpose(-1, -2) if tb else rb)
    check(gemm.gemm(a, b, transpose_a=ta, transpose_b=tb), ref, dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", range(3))
def test_gemm_fused_epilogues_every_config(dtype, config):
    gemm, configs = triton_module("gemm"), triton_module("configs")
    a, b = rand(2, 33, 13, dtype=dtype), rand(13, 7, dtype=dtype)
    bias, slope, residual = rand(7, dtype=dtype), rand(7, dtype=dtype), rand(33, 7, dtype=dtype)
    ra, rb, rbias, rslope, rres = f32(a, b, bias, slope, residual)
    y = ra @ rb + rbias
    ref = F.silu(torch.where(y >= 0, y, y * rslope) + rres)
    out = gemm.gemm(a, b, bias=bias, prelu_slope=slope, residual=residual, post_activation=A.SILU,
                    config=configs.GEMM_CONFIGS[config])
    check(out, ref, dtype)
    out = gemm.gemm(a, b, bias=bias, activation=A.CLIP, alpha=-0.5, beta=1.5, config=configs.GEMM_CONFIGS[config])
    check(out, torch.clamp(ra @ rb + rbias, -0.5, 1.5), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("split_k", [0, 4, 8])  # 0: the tactic's config, its split chosen per shape
@pytest.mark.parametrize("k", [13, 200, 1100])  # fewer K blocks than splits (empty splits), a few, many
def test_split_k_gemm_and_convolution(dtype, split_k, k):
    """Split-K sums every slice of K exactly once, per tile and per batch, before the epilogue runs."""
    gemm, conv, configs = triton_module("gemm"), triton_module("conv"), triton_module("configs")
    split = dataclasses.replace(configs.SPLIT_K_CONFIGS[0], split_k=split_k)
    assert configs.split_k_for(split, 1) > 1
    a, b = rand(2, 70, k, dtype=dtype), rand(k, 33, dtype=dtype)
    bias, residual = rand(33, dtype=dtype), rand(2, 70, 33, dtype=dtype)
    ra, rb, rbias, rres = f32(a, b, bias, residual)
    out = gemm.gemm(a, b, bias=bias, activation=A.RELU, residual=residual, config=split)
    check(out, F.relu(ra @ rb + rbias) + rres, dtype)
    x = rand(1, k, 7, 5, dtype=dtype, channels_last=True)
    w = rand(13, k, 3, 3, dtype=dtype, channels_last=True)
    rx, rw = f32(x, w)
    out = conv.conv2d(x, w, None, stride=(1, 1), pads=(1, 1, 1, 1), activation=A.RELU, config=split)
    check(out, F.relu(F.conv2d(rx, rw, None, 1, 1)), dtype)



@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["igemm", "splitk", "depthwise", "gemm", "gemm_splitk"])
def test_kernels_store_over_their_residual_when_allowed(dtype, kernel):
    """over_residual: the result lands in the residual's own storage and equals the out-of-place result; where the
    residual cannot hold it (another layout), a new tensor is made and the residual is left as it was."""
    gemm, conv, configs = triton_module("gemm"), triton_module("conv"), triton_module("configs")
    if kernel.startswith("gemm"):
        a, b, bias = rand(2, 70, 200, dtype=dtype), rand(200, 33, dtype=dtype), rand(33, dtype=dtype)
        config = configs.SPLIT_K_CONFIGS[0] if kernel == "gemm_splitk" else configs.GEMM_CONFIGS[0]
        run = functools.partial(gemm.gemm, a, b, bias=bias, activation=A.RELU, config=config)
        residual, foreign = rand(2, 70, 33, dtype=dtype), rand(2, 33, 70, dtype=dtype).transpose(1, 2)
    else:
        depthwise = kernel == "depthwise"
        channels = 33 if depthwise else 13
        x = rand(2, channels, 7, 5, dtype=dtype, channels_last=True)
        w = rand(channels, 1 if depthwise else channels, 3, 3, dtype=dtype, channels_last=True)
        config = {"igemm": configs.CONV_CONFIGS[2], "splitk": configs.SPLIT_K_CONFIGS[0]}.get(kernel)
        run = functools.partial(conv.conv2d, x, w, rand(channels, dtype=dtype), pads=(1, 1, 1, 1),
                                groups=channels if depthwise else 1, activation=A.RELU, config=config)
        residual = rand(2, channels, 7, 5, dtype=dtype, channels_last=True)
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
    gemm = triton_module("gemm")
    a, b = rand(7, 13, scale=2.0), rand(13, 33)
    ref_y = a @ b
    for activation, (alpha, beta, ref) in ACTIVATION_REFS.items():
        out = gemm.gemm(a, b, activation=activation, alpha=alpha, beta=beta)
        error = (out - ref(ref_y)).abs().max().item()
        assert error <= 1e-4 * max(ref(ref_y).abs().max().item(), 1.0), (activation, error)



@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gelu_erf_stored_in_16_bits_is_off_by_rounding_and_the_cheap_erf_bound(dtype):
    # 16-bit outputs take a cheaper erf (epilogue._gelu_16bit, |error| <= 1.5e-7): each result must be within one ulp
    # of the exact GELU (subnormals included) plus 0.5 |x| 1.5e-7, across the range where GELU bends (identity
    # weights: the epilogue sees the input itself); without the erf term, 5 of 4,096 values in the far negative
    # tail fail by a tenth of a millionth, where rounding GELU's input to 16 bits unfused errs more
    gemm = triton_module("gemm")
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
def test_tma_gemm_with_its_epilogue(dtype, b_k_major, warp_specialize, split_epilogue):
    # ragged M and N against the tiles, more tiles than programs (each program walks several), K over two steps
    gemm_tma, configs = triton_module("gemm_tma"), triton_module("configs")
    a, w = rand(100, 136, dtype=dtype), rand(72, 136, dtype=dtype, scale=0.1)
    bias, residual = rand(72, dtype=dtype), rand(100, 72, dtype=dtype)
    b = w if b_k_major else w.t().contiguous()
    out = gemm_tma.gemm_tma(a, b, b_k_major=b_k_major, bias=bias, activation=A.GELU_ERF, residual=residual,
                            post_activation=A.RELU, programs=3,
                            config=configs.TmaGemmConfig(configs.GemmConfig(32, 32, 32, 2, 4, 2), warp_specialize,
                                                         split_epilogue))
    ra, rw, rbias, rres = f32(a, w, bias, residual)
    check(out, F.relu(F.gelu(ra @ rw.t() + rbias) + rres), dtype)
    with pytest.raises(ValueError, match="multiples of 8"):
        gemm_tma.gemm_tma(a[:, :130], w[:, :130].contiguous())

# ---- convolution ---------------------------------------------------------------------------------------------
CONV_CASES = [  # x shape, weight shape, stride, pads (h_begin, w_begin, h_end, w_end), dilation
    ((1, 1, 1, 1), (1, 1, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((2, 7, 13, 11), (13, 7, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 3, 13, 13), (33, 3, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2)),  # asymmetric pads, stride, dilation
    ((2, 33, 7, 5), (7, 33, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # pointwise conv, C > BLOCK_K
    ((2, 3, 23, 21), (19, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),  # a stem: 147 = 4.6 K steps of (r, s, c)
]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, stride, pads, dilation", CONV_CASES)
def test_conv2d_implicit_gemm(dtype, channels_last, x_shape, w_shape, stride, pads, dilation):
    conv = triton_module("conv")
    x = rand(*x_shape, dtype=dtype, channels_last=channels_last)
    w = rand(*w_shape, dtype=dtype, channels_last=channels_last)
    bias = rand(w_shape[0], dtype=dtype)
    rx, rw, rbias = f32(x, w, bias)
    ref = F.conv2d(F.pad(rx, (pads[1], pads[3], pads[0], pads[2])), rw, rbias, stride, 0, dilation)
    residual = rand(*ref.shape, dtype=dtype)
    out = conv.conv2d(x, w, bias, stride=stride, pads=pads, dilation=dilation, activation=A.RELU,
                      residual=residual, post_activation=A.LEAKY_RELU, post_alpha=0.1)
    check(out, F.leaky_relu(F.relu(ref) + cpu32(residual), 0.1), dtype)
    assert out.is_contiguous(memory_format=torch.channels_last)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", range(3))
def test_conv2d_every_config_with_prelu(dtype, config):
    conv, configs = triton_module("conv"), triton_module("configs")
    x, w = rand(2, 13, 7, 9, dtype=dtype, channels_last=True), rand(33, 13, 3, 3, dtype=dtype, channels_last=True)
    slope = rand(33, 1, 1, dtype=dtype)
    rx, rw, rslope = f32(x, w, slope)
    ref = F.conv2d(rx, rw, None, 2, 1)
    out = conv.conv2d(x, w, None, stride=(2, 2), pads=(1, 1, 1, 1), prelu_slope=slope,
                      config=configs.CONV_CONFIGS[config])
    check(out, torch.where(ref >= 0, ref, ref * rslope), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels, multiplier, stride, pads, dilation", [
    (1, 1, (1, 1), (0, 0, 0, 0), (1, 1)), (13, 1, (2, 2), (1, 1, 1, 1), (1, 1)),
    (7, 2, (1, 2), (2, 0, 1, 1), (2, 1)), (33, 1, (1, 1), (1, 1, 1, 1), (1, 1))])
def test_depthwise_conv2d(dtype, channels, multiplier, stride, pads, dilation):
    conv, configs = triton_module("conv"), triton_module("configs")
    x = rand(2, channels, 13, 7, dtype=dtype, channels_last=True)
    w, bias = rand(channels * multiplier, 1, 3, 3, dtype=dtype), rand(channels * multiplier, dtype=dtype)
    rx, rw, rbias = f32(x, w, bias)
    ref = F.conv2d(F.pad(rx, (pads[1], pads[3], pads[0], pads[2])), rw, rbias, stride, 0, dilation, channels)
    for config in configs.DEPTHWISE_CONFIGS:
        out = conv.conv2d(x, w, bias, stride=stride, pads=pads, dilation=dilation, groups=channels,
                          activation=A.CLIP, alpha=0.0, beta=6.0, config=config)
        check(out, ref.clamp(0, 6), dtype)


@needs_triton
def test_conv2d_rejects_grouped_convolution():
    conv = triton_module("conv")
    with pytest.raises(ValueError, match="groups"):
        conv.conv2d(rand(1, 4, 5, 5), rand(4, 2, 3, 3), groups=2)


# ---- row kernels -----------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, block_n", [((1,), None), ((3, 7), None), ((2, 5, 33), None), ((2, 5, 33), 16),
                                            ((2, 9000), None)])
def test_softmax(dtype, shape, block_n):
    softmax = triton_module("softmax")
    x = rand(*shape, dtype=dtype, scale=3.0)
    check(softmax.softmax(x, block_n=block_n), torch.softmax(cpu32(x), -1), dtype)
    check(softmax.softmax(x, log=True, block_n=block_n), torch.log_softmax(cpu32(x), -1), dtype)


@needs_triton
def test_softmax_of_masked_rows():
    """-inf entries (masked scores) in a first block must not poison the running sum of a looped row."""
    softmax = triton_module("softmax")
    x = rand(3, 40)
    x[:, :20] = float("-inf")
    check(softmax.softmax(x, block_n=16), torch.softmax(x, -1), torch.float32)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis, block_n, rows", [
    ((1, 1), -1, None, 1), ((3, 7), -1, None, 1), ((2, 5, 33), -1, None, 1), ((2, 5, 33), -2, None, 1),
    ((2, 5, 33), -1, 16, 1),
    ((1, 1), -1, None, 4), ((2, 5, 33), -1, None, 4), ((2, 5, 33), -2, None, 16), ((3, 7, 768), -1, None, 4)])
def test_layer_norm_and_rms_norm(dtype, shape, axis, block_n, rows):
    norms = triton_module("norms")
    x = rand(*shape, dtype=dtype, scale=2.0) + 1.0
    normalized = shape[axis % len(shape):]
    w, b = rand(*normalized, dtype=dtype), rand(normalized[-1], dtype=dtype)
    rx, rw, rb = f32(x, w, b)
    check(norms.layer_norm(x, w, b, axis=axis, eps=1e-5, block_n=block_n, rows=rows),
           F.layer_norm(rx, normalized, rw, rb.expand(normalized), 1e-5), dtype)
    check(norms.layer_norm(x, w, None, axis=axis, block_n=block_n, rows=rows),
           F.layer_norm(rx, normalized, rw, None), dtype)
    check(norms.rms_norm(x, w, axis=axis, eps=1e-6, block_n=block_n, rows=rows),
           F.rms_norm(rx, normalized, rw, 1e-6), dtype)
    check(norms.rms_norm(x, None, axis=axis, block_n=block_n, rows=rows), F.rms_norm(rx, normalized, None, 1e-6),
           dtype)


@needs_triton
def test_tiled_norms_refuse_rows_longer_than_their_tile():
    norms = triton_module("norms")
    with pytest.raises(ValueError, match="longer than"):
        norms.layer_norm(rand(2, 5000), rand(5000), rows=4)


# ---- pooling ---------------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, pads, dilation", [((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
                                                             ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
                                                             ((2, 3), (1, 2), (0, 1, 0, 1), (2, 1))])
def test_pooling_against_torch(dtype, kernel, stride, pads, dilation):
    pooling = triton_module("pooling")
    x = rand(2, 13, 11, 7, dtype=dtype, channels_last=True)
    padding = (pads[0], pads[1])  # symmetric here, as torch takes them
    ref = F.max_pool2d(cpu32(x), kernel, stride, padding, dilation)
    check(pooling.pool2d(x, is_max=True, kernel=kernel, stride=stride, pads=pads, dilation=dilation), ref, dtype)
    if dilation == (1, 1):
        for include_pad in (False, True):
            ref = F.avg_pool2d(cpu32(x), kernel, stride, padding, count_include_pad=include_pad)
            out = pooling.pool2d(x, is_max=False, kernel=kernel, stride=stride, pads=pads,
                                 count_include_pad=include_pad)
            check(out, ref, dtype)


@needs_triton
@pytest.mark.parametrize("pool_type", [ops.PoolingType.MAX, ops.PoolingType.AVERAGE])
@pytest.mark.parametrize("include_pad", [False, True])
def test_pooling_ceil_mode_and_asymmetric_pads(pool_type, include_pad):
    """ONNX semantics (ceil-mode overhang not counted) against the CPU reference kernel."""
    from tensorkiln.kernels.cpu.pooling import pooling as reference

    pooling = triton_module("pooling")
    op = ops.Pooling(pool_type, (3, 2), (2, 2), (1, 0, 2, 1), (1, 1), True, include_pad)
    x = rand(2, 7, 13, 10, channels_last=True)
    out = pooling.pool2d(x, is_max=pool_type is ops.PoolingType.MAX, kernel=op.kernel, stride=op.stride,
                         pads=op.pads, dilation=op.dilation, ceil_mode=True, count_include_pad=include_pad)
    check(out, reference(op, [cpu32(x)])[0], torch.float32)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 13, 7, 5), (2, 70, 33), (1, 7, 9, 13)])
def test_global_pooling(dtype, shape):
    pooling = triton_module("pooling")
    x = rand(*shape, dtype=dtype, channels_last=True)
    dims = tuple(range(2, x.dim()))
    check(pooling.global_pool(x, is_max=False), cpu32(x).mean(dims, keepdim=True), dtype)
    check(pooling.global_pool(x, is_max=True), cpu32(x).amax(dims, keepdim=True), dtype)


# ---- attention -------------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sq, sk, d, dv", [(1, 1, 7, 7), (13, 33, 16, 7), (33, 13, 33, 16), (70, 70, 8, 8)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "float", "bool", "padding"])
def test_attention(dtype, sq, sk, d, dv, causal, mask_kind):
    attention = triton_module("attention")
    q, k, v = rand(2, 3, sq, d, dtype=dtype), rand(2, 1, sk, d, dtype=dtype), rand(2, 3, sk, dv, dtype=dtype)
    mask = None
    if mask_kind == "float":
        mask = rand(sq, sk, dtype=dtype)
    elif mask_kind == "bool":
        mask = (torch.rand(2, 1, sq, sk, generator=rand.gen) > 0.3).to(DEVICE)
        mask[..., 0] = True  # every row keeps a key (fully masked rows differ between implementations)
    elif mask_kind == "padding":  # BERT's: one additive row per sequence, broadcast over heads and queries
        mask = torch.where(torch.arange(sk) < torch.tensor([[sk], [sk // 2 + 1]]), 0.0, -1e4)
        mask = mask.view(2, 1, 1, sk).to(DEVICE, dtype)
    rq, rk, rv = f32(q, k, v)
    scores = rq @ rk.transpose(-1, -2) * 0.3
    if mask is not None:
        scores = scores + (cpu32(mask) if mask.dtype != torch.bool else torch.zeros(mask.shape)
                           .masked_fill(~mask.cpu(), float("-inf")))
    if causal:
        scores = scores.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(1), float("-inf"))
    ref = torch.softmax(scores, -1) @ rv
    check(attention.attention(q, k, v, mask, scale=0.3, causal=causal), ref, dtype)


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
    pointwise = triton_module("pointwise")
    monkeypatch.setenv(pointwise.CACHE_ENV, str(tmp_path))
    pointwise.load_kernel.cache_clear()
    program, ref = POINTWISE_PROGRAMS[case]
    a = rand(2, 7, 5, 13, dtype=dtype, channels_last=channels_last)
    b = torch.randint(1, 4, (7, 1, 1), generator=rand.gen).to(DEVICE, dtype)  # integral exponents for pow
    c = (rand(13, dtype=dtype) + 3.0)
    out = pointwise.fused_pointwise(program, [a, b, c], block=256)
    if case == DISCONTINUOUS_PROGRAM and dtype != torch.float32:
        # fmod, round and sign jump: an input within rounding of a jump lands on the other side of it (libdevice's
        # pow against torch's), so a few elements may differ by a step; every other one must match
        expected = ref(*f32(a, b, c))
        close = (out.float().cpu() - expected.cpu()).abs() <= TOLERANCE[dtype] * expected.abs().max().cpu()
        assert close.float().mean() >= 0.99, f"{int((~close).sum())} of {close.numel()} elements differ"
    else:
        check(out, ref(*f32(a, b, c)), dtype)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    sources = list(tmp_path.glob("pointwise_*.py"))
    assert len(sources) == 1 and program[0] in sources[0].read_text()  # the source came from the cache dir


@needs_triton
def test_fused_pointwise_rejects_what_it_cannot_render():
    pointwise = triton_module("pointwise")
    assert pointwise.unsupported_reason(("t0 = sum in0 in1", "out = t0")) is None
    assert "equal" in pointwise.unsupported_reason(("t0 = equal in0 in1", "out = t0"))
    assert "unknown opcode" in pointwise.unsupported_reason(("t0 = __import__ in0", "out = t0"))
    with pytest.raises(ValueError, match="cannot be compiled"):
        pointwise.generate_source(("t0 = isnan in0", "out = t0"), (True,), 1)
