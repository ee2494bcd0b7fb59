"""fused_matmul_layer_norm on the CUDA target: the Triton GEMM with LayerNorm in its epilogue (row-block arrival,
split-K), and every registered tactic of the kind, against the portable kernel (FP32, on the CPU). Where they run:
triton_support.py (Triton's interpreter with small shapes on a machine without a GPU); the last tests need a GPU
(BERT-sized shapes, an engine built for CUDA)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton_support import DEVICE, DTYPES, HAS_CUDA, check, f32, needs_triton, rand, triton_module

from tensorkiln.ir import ops  # noqa: E402  (after triton_support sets TRITON_INTERPRET)
from tensorkiln.ir.dtypes import DataType  # noqa: E402
from tensorkiln.ir.graph import Tensor  # noqa: E402
from tensorkiln.kernels import registry  # noqa: E402


def _reference(a, b, scale, shift, bias, residual, eps, transpose_b, dtype):
    """The unfused pair: the GEMM's sum rounded to the output dtype (as it was stored), then the norm in FP32."""
    ra, rb, rscale, rshift, rbias, rres = f32(a, b, scale, shift, bias, residual)
    y = ra @ (rb.t() if transpose_b else rb)
    y = y + (0 if rbias is None else rbias) + (0 if rres is None else rres)
    y = y.to(dtype).float()
    return F.layer_norm(y, y.shape[-1:], rscale.expand(y.shape[-1]),
                        None if rshift is None else rshift.expand(y.shape[-1]), eps)


def _configs():
    configs = triton_module("configs")
    return [configs.GemmConfig(16, 16, 16, 2, 4, 1), configs.GemmConfig(32, 16, 32, 8, 4, 1),
            configs.GemmConfig(16, 32, 16, 1, 4, 1, split_k=3), configs.SPLIT_K_CONFIGS[0]]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", range(4))
@pytest.mark.parametrize("a_shape, n, bias, residual, shift", [
    ((2, 13, 40), 72, True, True, True),  # ragged rows, columns and K; several row and column blocks
    ((7, 33), 24, False, True, False),  # no bias (hoisted), no shift
    ((1, 5, 17), 7, True, False, True),  # no residual, a row narrower than a tile
])
def test_gemm_layer_norm_kernel(dtype, config, a_shape, n, bias, residual, shift):
    kernel = triton_module("gemm_layer_norm")
    k = a_shape[-1]
    a, b = rand(*a_shape, dtype=dtype), rand(n, k, dtype=dtype, scale=0.3)
    scale, shift_t = rand(n, dtype=dtype), rand(n, dtype=dtype) if shift else None
    bias_t = rand(n, dtype=dtype) if bias else None
    res = rand(*a_shape[:-1], n, dtype=dtype) if residual else None
    out = kernel.gemm_layer_norm(a, b, scale, shift_t, bias=bias_t, residual=res, eps=1e-5, transpose_b=True,
                                 config=_configs()[config])
    check(out, _reference(a, b, scale, shift_t, bias_t, res, 1e-5, True, dtype), dtype)


@needs_triton
def test_gemm_layer_norm_normalizes_wide_rows_in_passes():
    """Rows of 600 (a 1024-wide tile): the last program of a 16-row block normalizes it 8 rows a pass."""
    kernel = triton_module("gemm_layer_norm")
    a, b, scale, shift, residual = rand(20, 16), rand(16, 600), rand(600), rand(600), rand(20, 600)
    assert kernel._norm_rows(16, 1024, 4) == 8
    out = kernel.gemm_layer_norm(a, b, scale, shift, residual=residual, eps=1e-5, config=_configs()[0])
    check(out, _reference(a, b, scale, shift, None, residual, 1e-5, False, torch.float32), torch.float32)


@needs_triton
def test_gemm_layer_norm_stores_over_its_residual():
    kernel = triton_module("gemm_layer_norm")
    a, b, scale = rand(3, 9, 20), rand(20, 48), rand(48)
    residual = rand(3, 9, 48)
    expected = _reference(a, b, scale, None, None, residual, 1e-6, False, torch.float32)
    out = kernel.gemm_layer_norm(a, b, scale, residual=residual, eps=1e-6, config=_configs()[2], over_residual=True)
    assert out.data_ptr() == residual.data_ptr()
    check(out, expected, torch.float32)


@needs_triton
@pytest.mark.skipif(HAS_CUDA and torch.cuda.get_device_capability() < (9, 0), reason="TMA needs Hopper or later")
@pytest.mark.parametrize("split_epilogue", [False, True])
@pytest.mark.parametrize("b_k_major", [False, True])
def test_tma_gemm_layer_norm_kernel(split_epilogue, b_k_major):
    kernel, configs = triton_module("gemm_layer_norm"), triton_module("configs")
    config = configs.TmaGemmConfig(configs.GemmConfig(16, 32, 16, 2, 4, 1), split_epilogue=split_epilogue)
    dtype = torch.float16
    a, b, scale, shift, bias = rand(40, 24, dtype=dtype), rand(72, 24, dtype=dtype, scale=0.2), \
        rand(72, dtype=dtype), rand(72, dtype=dtype), rand(72, dtype=dtype)
    residual = rand(40, 72, dtype=dtype)
    expected = _reference(a, b, scale, shift, bias, residual, 1e-5, True, dtype)
    out = kernel.gemm_tma_layer_norm(a, b if b_k_major else b.t().contiguous(), scale, shift, b_k_major=b_k_major,
                                     bias=bias, residual=residual, eps=1e-5, config=config, out=residual)
    assert out.data_ptr() == residual.data_ptr()
    check(out, expected, dtype)


def _specs(*tensors):
    return [None if t is None else Tensor("t", DataType.from_torch(t.dtype), tuple(t.shape)) for t in tensors]


@needs_triton
@pytest.mark.parametrize("residual_in_place", [False, True])
def test_every_cuda_tactic_matches_the_portable_kernel(residual_in_place):
    """Every tactic registered for the kind (library + row kernel, the fused Triton kernel, its split-K config),
    fed as the runtime feeds them, against the portable kernel; a shape where split-K pays (K deep, output small)."""
    op = ops.FusedMatMulLayerNorm(transpose_b=False, residual=True, epsilon=1e-5,
                                  residual_in_place=residual_in_place)
    a, b, bias, scale, shift = rand(1, 9, 2048), rand(2048, 40, scale=0.02), rand(40), rand(40), rand(40)
    residual = rand(1, 9, 40)
    inputs = [a, b, bias, residual, scale, shift]
    portable = registry.get_kernel(op.KIND)
    expected = portable(op, [t.cpu() for t in inputs])[0]
    entries = [e for e in registry.candidates(op.KIND, "cuda", op, _specs(*inputs)) if e.impl != "torch"]
    impls = {e.impl.split("_")[0] + "_" + e.impl.split("_")[1] for e in entries}
    assert {"cublaslt_norm", "triton_gemmln", "triton_gemmlnsmall", "triton_gemmlnsplitk"} <= impls, impls
    for entry in entries:
        fed = [t.clone() for t in inputs]
        out = entry.fn(op, fed)[0]
        check(out, expected, torch.float32)
        if residual_in_place:  # every tactic of the kind may store over the residual: each must, where asked
            assert entry.writes_over_residual and out.data_ptr() == fed[3].data_ptr(), entry.impl


@needs_triton
@pytest.mark.skipif(HAS_CUDA and torch.cuda.get_device_capability() < (9, 0), reason="TMA needs Hopper or later")
def test_tma_tactics_take_large_fp16_layers(monkeypatch):
    from tensorkiln.kernels.cuda import matmul_layer_norm_tactics as tactics

    monkeypatch.setattr(tactics, "_hopper", lambda: True)  # in the interpreter too
    op = ops.FusedMatMulLayerNorm(residual=True, residual_in_place=True)
    dtype = torch.float16
    a, b, scale, shift = rand(2, 256, 16, dtype=dtype), rand(16, 256, dtype=dtype, scale=0.25), \
        rand(256, dtype=dtype), rand(256, dtype=dtype)  # 512 rows: 4 x 1 tiles of 128 x 256
    residual = rand(2, 256, 256, dtype=dtype)
    inputs = [a, b, None, residual, scale, shift]
    config = triton_module("configs").TMA_GEMM_CONFIGS[0]
    assert not tactics._tma_ok(op, _specs(*inputs), config)  # 4 tiles: fewer than TMA_MIN_TILES
    monkeypatch.setattr(tactics, "TMA_MIN_TILES", 4)
    assert tactics._tma_ok(op, _specs(*inputs), config)
    assert not tactics._tma_ok(op, _specs(rand(2, 256, 12, dtype=dtype), rand(12, 256, dtype=dtype), *inputs[2:]),
                               config)  # K not a multiple of 8
    expected = _reference(a, b, scale, shift, None, residual, op.epsilon, False, dtype)
    for fn in (tactics.tma_gemm_with_norm, tactics.tma_flat_gemm_with_norm):
        out = fn(op, [t if t is None else t.clone() for t in inputs], config)[0]
        check(out, expected, dtype)
    with pytest.raises(NotImplementedError, match="FP16/BF16"):
        tactics.tma_gemm_with_norm(op, [None if t is None else t.float() for t in inputs], config)


@needs_triton
def test_tactics_decline_what_they_cannot_run():
    from tensorkiln.kernels.cuda import matmul_layer_norm_tactics as tactics

    op = ops.FusedMatMulLayerNorm(residual=True)
    spec = lambda *shape, dtype=DataType.FLOAT: Tensor("t", dtype, shape)  # noqa: E731
    good = [spec(4, 16), spec(16, 8), spec(8), spec(4, 8), spec(8), spec(8)]
    assert tactics._fusable(op, good)
    assert not tactics._fusable(op, [*good[:3], spec(1, 8), *good[4:]])  # a broadcast residual
    assert not tactics._fusable(op, [*good[:4], spec(3), good[5]])  # a scale of neither 1 nor N values
    assert not tactics._fusable(op, [spec(4, 16), spec(16, 9000), None, None, spec(9000), None])  # too wide a row
    assert not tactics._fusable(op, [spec(4, 16, dtype=DataType.INT32), *good[1:]])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("rows, k", [(128, 3072), (128, 768), (4096, 768)])
def test_bert_shapes_on_the_gpu(rows, k):
    """BERT-base's residual projections (N 768) at batch 1 and 32, FP16, every tactic of the kind."""
    op = ops.FusedMatMulLayerNorm(residual=True, epsilon=1e-12)
    dtype = torch.float16
    a, b, scale, shift = rand(rows, k, dtype=dtype), rand(k, 768, dtype=dtype, scale=k ** -0.5), \
        rand(768, dtype=dtype), rand(768, dtype=dtype)
    residual = rand(rows, 768, dtype=dtype)
    inputs = [a, b, None, residual, scale, shift]
    expected = _reference(a, b, scale, shift, None, residual, 1e-12, False, dtype)
    entries = [e for e in registry.candidates(op.KIND, "cuda", op, _specs(*inputs))]
    assert any(e.impl.startswith("triton_gemmln") for e in entries)
    for entry in entries:
        check(entry.fn(op, [None if t is None else t.clone() for t in inputs])[0].to(DEVICE), expected, dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["timed", "cublaslt_norm", "triton_gemmln_bm", "triton_gemmlnsmall",
                                    "triton_gemmlnsplitk"])
def test_hf_bert_engine_on_the_gpu(tmp_path, family):
    """A small Hugging Face BERT in FP16 on the GPU: its residual projections are fused_matmul_layer_norm steps, on
    the tactic the timer picks or on each family in turn (by hint), and the output matches onnxruntime in FP32."""
    import warnings

    import numpy as np
    import onnx
    import onnxruntime as ort
    import transformers

    import tensorkiln as tk
    from tensorkiln.builder import BuilderConfig, Target
    from tensorkiln.importers.onnx import parse_onnx
    from tensorkiln.quant.precision import Precision
    from tensorkiln.tactics.selection import tactic_id

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        hidden_size=128, num_attention_heads=4, intermediate_size=256, num_hidden_layers=2,
        max_position_embeddings=128, vocab_size=1000, attn_implementation="sdpa")).eval()
    mask = torch.ones(2, 64, dtype=torch.int64)
    mask[1, 40:] = 0
    feed = {"input_ids": torch.randint(0, 1000, (2, 64)), "attention_mask": mask}
    path = tmp_path / "bert.onnx"

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model  # a submodule: the tracer exports its weights as initializers, not as constants

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(), tuple(feed.values()), str(path), dynamo=False, opset_version=17,
                          input_names=list(feed))
    onnx_model = onnx.load(str(path))
    onnx_model.ir_version = min(onnx_model.ir_version, 8)  # the GPU machine's onnxruntime reads IR versions up to 13
    onnx.save(onnx_model, str(path))
    hints = ()
    if family != "timed":
        network = parse_onnx(path).ir
        from tensorkiln.passes.manager import DEFAULT_PIPELINE, PassManager

        PassManager(DEFAULT_PIPELINE).run(network)
        fused = [layer for layer in network.layers if layer.kind == ops.FusedMatMulLayerNorm.KIND]
        picks = {layer.name: [tactic_id(e) for e in registry.candidates(layer.kind, "cuda", layer.op, layer.inputs)
                              if e.impl.startswith(family)] for layer in fused}
        if not any(picks.values()):
            pytest.skip(f"no {family} tactic takes these shapes")
        hints = tuple((name, found[0]) for name, found in picks.items() if found)
    engine = tk.Builder(BuilderConfig(target=Target.CUDA, precision=Precision.FP16, tactic_hints=hints)).build(
        parse_onnx(path))
    steps = [step for step in engine.plan.steps if step.kind == ops.FusedMatMulLayerNorm.KIND]
    assert len(steps) == 4
    if hints:
        assert {step.tactic for step in steps if step.name in dict(hints)} == set(dict(hints).values())
    numpy_feed = {key: value.numpy() for key, value in feed.items()}
    (actual,) = engine.create_execution_context().execute(numpy_feed).values()
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, numpy_feed)
    error = float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - expected)) / np.max(np.abs(expected)))
    assert error <= 5e-2, f"relative error {error:.2e} ({family}: {[step.tactic for step in steps]})"


# ---- add + LayerNorm (fused_add_layer_norm: the embeddings) ----------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("addend_shape", [(1, 13, 40), (13, 40), (2, 13, 40), (40,), (2, 1, 40)])
@pytest.mark.parametrize("rows", [1, 4])
def test_add_layer_norm_kernel(dtype, addend_shape, rows):
    kernel = triton_module("add_layer_norm")
    x, addend, scale, shift = rand(2, 13, 40, dtype=dtype), rand(*addend_shape, dtype=dtype), rand(40, dtype=dtype), \
        rand(40, dtype=dtype)
    rx, ra, rs, rb = f32(x, addend, scale, shift)
    check(kernel.add_layer_norm(x, addend, scale, shift, eps=1e-5, rows=rows),
          F.layer_norm(rx + ra, (40,), rs, rb, 1e-5), dtype)


@needs_triton
def test_every_add_layer_norm_tactic_matches_the_portable_kernel():
    op = ops.FusedAddLayerNorm(epsilon=1e-12)
    inputs = [rand(2, 9, 48), rand(1, 9, 48), rand(48), rand(48)]
    expected = registry.get_kernel(op.KIND)(op, [t.cpu() for t in inputs])[0]
    entries = [e for e in registry.candidates(op.KIND, "cuda", op, _specs(*inputs)) if e.impl != "torch"]
    assert len(entries) == len(triton_module("configs").NORM_CONFIGS)
    for entry in entries:
        check(entry.fn(op, inputs)[0], expected, torch.float32)
    wide = [rand(2, 5000), rand(5000), rand(5000), None]
    assert not [e for e in registry.candidates(op.KIND, "cuda", op, _specs(*wide)) if e.impl != "torch"]
