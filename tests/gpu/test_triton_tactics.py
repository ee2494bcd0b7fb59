"""The Triton tactics of the CUDA target (kernels/cuda/triton_tactics.py): which layers each takes, their kernels
fed as the runtime feeds them, and tensorkiln without triton. Where they run: triton_support.py.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from triton_support import HAS_CUDA, check, f32, needs_triton, rand, triton_module

from tensorkiln.ir import ops  # noqa: E402  (after triton_support sets TRITON_INTERPRET)
from tensorkiln.ir.ops import ActivationType as A  # noqa: E402


@needs_triton
@pytest.mark.skipif(HAS_CUDA and torch.cuda.get_device_capability() < (9, 0), reason="TMA needs Hopper or later")
def test_tma_tactic_serves_large_1x1_convolutions(monkeypatch):
    """The registered TMA tactic: which layers it takes (large 1x1 convolutions, 16-byte aligned, no PReLU), its
    result, and its store over the residual; FP32 layers are declined at run time, as the tactic timer reads it."""
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.ir.graph import Tensor
    from tensorkiln.kernels.cuda import triton_tactics as tt

    monkeypatch.setattr(tt, "_hopper", lambda: True)  # in the interpreter too
    config = triton_module("configs").TMA_GEMM_CONFIGS[0]
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
    x, w, bias = rand(8, 64, 32, 32, dtype=dtype, channels_last=True), rand(512, 64, 1, 1, dtype=dtype, scale=0.1), \
        rand(512, dtype=dtype)
    residual = rand(8, 512, 32, 32, dtype=dtype, channels_last=True)
    rx, rw, rb, rres = f32(x, w, bias, residual)
    expected = F.relu(F.conv2d(rx, rw, rb) + rres)
    out = tt.pointwise_convolution_tma(dataclasses.replace(conv, residual_in_place=True), [x, w, bias, residual],
                                       config)[0]
    assert out.data_ptr() == residual.data_ptr() and out.is_contiguous(memory_format=torch.channels_last)
    check(out, expected, dtype)
    relu = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, activation=A.RELU)  # NCHW input: rows copied
    check(tt.pointwise_convolution_tma(relu, [x.contiguous(), w, bias], config)[0], F.relu(F.conv2d(rx, rw, rb)),
           dtype)
    with pytest.raises(NotImplementedError, match="FP16/BF16"):
        tt.pointwise_convolution_tma(relu, [x.float(), w.float(), bias.float()], config)


@needs_triton
@pytest.mark.skipif(HAS_CUDA and torch.cuda.get_device_capability() < (9, 0), reason="TMA needs Hopper or later")
def test_tma_tactic_serves_large_matmuls_whose_epilogue_cublaslt_cannot_fuse(monkeypatch):
    """As a matmul tactic the TMA GEMM takes large GEMMs whose epilogue cuBLASLt cannot run whole (BERT's erf GELU, a
    bias with a residual), with either weight layout, and stores over the residual."""
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.ir.graph import Tensor
    from tensorkiln.kernels.cuda import triton_tactics as tt

    monkeypatch.setattr(tt, "_hopper", lambda: True)
    config = triton_module("configs").TMA_GEMM_CONFIGS[0]
    spec = lambda *shape: Tensor("t", DataType.FLOAT, shape)  # noqa: E731
    gelu = ops.FusedMatMul(transpose_b=True, activation=A.GELU_ERF)
    big = [spec(64, 128, 64), spec(512, 64), spec(512)]  # 8192 x 512: 64 x 2 tiles
    assert tt._tma_matmul_ok(gelu, big, config)
    assert not tt._tma_matmul_ok(gelu, [spec(1, 128, 64), *big[1:]], config)  # too few tiles
    assert not tt._tma_matmul_ok(gelu, [spec(64, 128, 60), spec(512, 60), big[2]], config)  # K % 8
    for fused in (None, A.RELU, A.GELU_TANH):  # cuBLASLt runs these epilogues whole
        assert not tt._tma_matmul_ok(dataclasses.replace(gelu, activation=fused), big, config)
    with_residual = dataclasses.replace(gelu, activation=None, residual=True)  # BERT's down-projection
    assert tt._tma_matmul_ok(with_residual, [*big, spec(64, 128, 512)], config)  # bias + residual: two kernels there
    assert not tt._tma_matmul_ok(with_residual, [*big[:2], None, spec(64, 128, 512)], config)  # accumulated into

    dtype = torch.float16
    a, w, bias, residual = rand(4, 40, 64, dtype=dtype), rand(48, 64, dtype=dtype, scale=0.1), rand(48, dtype=dtype), \
        rand(4, 40, 48, dtype=dtype)
    ra, rw, rb, rres = f32(a, w, bias, residual)
    fused = dataclasses.replace(gelu, residual=True, residual_in_place=True)
    out = tt.fused_matmul_tma(fused, [a, w, bias, residual], config)[0]
    assert out.data_ptr() == residual.data_ptr()
    check(out, F.gelu(ra @ rw.t() + rb) + rres, dtype)
    plain = ops.FusedMatMul(activation=A.GELU_ERF)  # weights [K, N]
    check(tt.fused_matmul_tma(plain, [a, w.t().contiguous(), bias], config)[0], F.gelu(ra @ rw.t() + rb), dtype)
    with pytest.raises(NotImplementedError, match="FP16/BF16"):
        tt.fused_matmul_tma(plain, [a.float(), w.t().float(), bias.float()], config)


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
    assert "triton_splitk_bm16_bn64_bk128_w4_s3_kauto" in small
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
         [rand(1, 7, 9, 8, channels_last=True), rand(13, 7, 3, 3, channels_last=True), rand(13), "residual",
          rand(13, 1, 1)], "triton_igemm_bm64_bn64_bk32_w4_s4"),
        (ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), 7, activation=A.HARD_SWISH),
         [rand(1, 7, 9, 8, channels_last=True), rand(7, 1, 3, 3, channels_last=True), rand(7), None, None],
         "triton_depthwise_bp32_bc64_w4"),
        (ops.FusedMatMul(transpose_b=True, activation=A.GELU_ERF, residual=True),
         [rand(2, 7, 13), rand(33, 13), rand(33), "residual", None], "triton_gemm_bm64_bn64_bk32_w4_s4"),
        (ops.Attention(scale=0.25, has_mask=True, causal=True),
         [rand(2, 13, 16), rand(2, 13, 16), rand(2, 13, 16), rand(13, 13)], "triton_flash_bm64_bn64_w4_s3"),
        (ops.LayerNorm(axis=-1, epsilon=1e-5), [rand(3, 33), rand(33), rand(33)], "triton_row_auto"),
        (ops.GlobalPooling(ops.PoolingType.AVERAGE), [rand(2, 7, 5, 5, channels_last=True)],
         "triton_nhwc_bp32_bc64_w4"),
        (ops.FusedPointwise(("t0 = sum in0 in1", "t1 = tanh t0", "out = t1")), [rand(3, 7), rand(7)],
         "triton_generated_b1024_w4"),
    ]
    for op, inputs, impl in cases:
        if "residual" in inputs:  # the residual has the output's shape: take it from the reference
            plain = [None if isinstance(t, str) else t for t in inputs]
            shape = get_kernel(op.KIND)(dataclasses.replace(op, residual=False), plain)[0].shape
            inputs[inputs.index("residual")] = rand(*shape)
        ref = get_kernel(op.KIND)(op, [None if t is None else t.cpu() for t in inputs])[0]
        check(get_kernel(op.KIND, "cuda", impl)(op, inputs)[0], ref, torch.float32)


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
