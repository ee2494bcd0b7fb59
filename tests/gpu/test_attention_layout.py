"""No copies around attention on the CUDA target: the head split (reshape [B, S, H*D] -> [B, S, H, D], transpose to
[B, H, S, D]) and the head merge after attention (the transpose back, reshape to [B, S, H*D]) are shuffle steps
that must come out as views, and the Triton flash-attention kernel must read the split views in place and write
its result so that the merge is a view too (kernels/cuda/triton/attention.py says how).

The Triton tests run on the GPU where there is one, else in Triton's CPU interpreter (TRITON_INTERPRET=1, set at
import by tests/gpu/triton_support.py, before any kernel module is imported); without triton they skip.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from triton_support import DEVICE, TOLERANCE, needs_triton, triton_module

import tensorkiln as tk  # noqa: E402  (after triton_support sets TRITON_INTERPRET)
from tensorkiln.importers.onnx import parse_onnx  # noqa: E402
from tensorkiln.ir import ops  # noqa: E402
from tensorkiln.kernels.registry import get_kernel  # noqa: E402



def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _head_split(projection: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """Q, K, V as a transformer export makes them from one merged projection [B, S, 3*H*D]: strided [B, H, S, D]
    views of it."""
    b, s, width = projection.shape
    return [t.reshape(b, s, heads, -1).transpose(1, 2) for t in projection.split(width // 3, dim=-1)]


# ---- the shuffle kernel (the portable one, which the CUDA target runs too) ----------------------------------------
# the shuffles merge_shuffles leaves around BERT's attention, as built from its export: (op, input shape, input
# strides): at batch 1 the size-1 batch dim moves to the end
HEAD_SHUFFLES = [
    (ops.Shuffle(reshape_dims=(16, 12, 64, 1), second_transpose=(3, 1, 0, 2)), (1, 16, 768), (16 * 2304, 2304, 1)),
    (ops.Shuffle(reshape_dims=(2, 16, 12, 64), second_transpose=(0, 2, 1, 3)), (2, 16, 768), (16 * 2304, 2304, 1)),
    (ops.Shuffle(first_transpose=(2, 1, 3, 0), reshape_dims=(1, 16, 768)), (1, 12, 16, 64), (12288, 64, 768, 1)),
    (ops.Shuffle(first_transpose=(0, 2, 1, 3), reshape_dims=(2, 16, 768)), (2, 12, 16, 64), (12288, 64, 768, 1)),
]


@pytest.mark.parametrize("op, shape, strides", HEAD_SHUFFLES, ids=["split_b1", "split_b2", "merge_b1", "merge_b2"])
def test_shuffle_kernel_splits_and_merges_heads_as_views(op, shape, strides):
    """Q, K, V are column slices of the merged QKV projection (row stride 2304); attention's result is stored
    [B, S, H, D] and seen as [B, H, S, D]. The shuffles over them move no data."""
    storage = torch.randn(shape[0] * 16 * 2304)
    x = storage.as_strided(shape, strides)
    (y,) = get_kernel(ops.Shuffle.KIND, "cuda")(op, [x])
    assert _same_memory(y, x)
    assert torch.equal(y, get_kernel(ops.Shuffle.KIND)(op, [x.contiguous()])[0])


# ---- the Triton kernel ---------------------------------------------------------------------------------------
class _RecordingLaunch:
    """Stands in for attention_kernel: records the addresses the launch hands the kernel, then launches it."""

    def __init__(self, kernel):
        self.kernel, self.pointers = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.pointers = [a.data_ptr() for a in args[:5]]  # q, k, v, out, mask
            return self.kernel[grid](*args, **kwargs)

        return launch


def _reference(q, k, v, mask, scale):
    q, k, v, mask = (t.float().cpu() for t in (q, k, v, mask))
    return torch.softmax(q @ k.transpose(-1, -2) * scale + mask, -1) @ v


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch", [1, 2])
def test_flash_attention_reads_head_split_views_and_returns_the_merge_as_a_view(monkeypatch, dtype, batch):
    module = triton_module("attention")
    recording = _RecordingLaunch(module.attention_kernel)
    monkeypatch.setattr(module, "attention_kernel", recording)
    generator = torch.Generator().manual_seed(0)
    seq, heads, depth = 13, 3, 16
    projection = torch.randn(batch, seq, 3 * heads * depth, generator=generator).to(DEVICE, dtype)
    q, k, v = _head_split(projection, heads)
    mask = torch.where(torch.rand(batch, 1, 1, seq, generator=generator) > 0.7, -1e4, 0.0).to(DEVICE, dtype)
    out = module.attention(q, k, v, mask, scale=0.25)
    # the kernel read the strided views and the head-broadcast mask where they lie: no copies were made for it
    assert recording.pointers[:3] == [q.data_ptr(), k.data_ptr(), v.data_ptr()]
    assert recording.pointers[4] == mask.data_ptr()
    reference = _reference(q, k, v, mask, 0.25)
    error = (out.float().cpu() - reference).abs().max() / reference.abs().max()
    assert out.shape == (batch, heads, seq, depth) and error <= TOLERANCE[dtype]
    # the head merge of the result is a free view, row-major [B, S, H*D]
    merged = out.transpose(1, 2).reshape(batch, seq, heads * depth)
    assert merged.is_contiguous() and _same_memory(merged, out) and merged.data_ptr() == recording.pointers[3]


@needs_triton
@pytest.mark.parametrize("q_shape, kv_shape", [((5, 13, 16), (5, 7, 16)), ((2, 3, 2, 9, 16), (2, 1, 2, 7, 16))],
                         ids=["3d", "5d_broadcast"])
def test_flash_attention_other_batch_ranks(q_shape, kv_shape):
    """No head dim (3-D: a row-major result), and two batch dims before the heads (merged for the launch)."""
    module = triton_module("attention")
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(q_shape, generator=generator).to(DEVICE)
    k, v = (torch.randn(kv_shape, generator=generator).to(DEVICE) for _ in range(2))
    mask = torch.zeros(q_shape[-2], kv_shape[-2], device=DEVICE)
    out = module.attention(q, k, v, None, scale=0.5)
    reference = _reference(q, k.expand(*q_shape[:-2], *kv_shape[-2:]), v.expand(*q_shape[:-2], *kv_shape[-2:]),
                           mask, 0.5)
    assert out.shape == reference.shape
    assert (out.cpu() - reference).abs().max() / reference.abs().max() <= TOLERANCE[torch.float32]
    assert out.is_contiguous() == (len(q_shape) == 3)


# ---- a transformer export, as the CUDA target runs it -------------------------------------------------------
class _SelfAttention(nn.Module):
    """BERT's self-attention block at a small width: separate Q, K, V projections (fuse_horizontal merges them and
    splits the result), heads split with view + permute and merged with permute + reshape, an additive mask."""

    def __init__(self, hidden: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.output = (nn.Linear(hidden, hidden) for _ in range(4))

    def _split(self, x):
        return x.view(x.shape[0], x.shape[1], self.heads, -1).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + (1.0 - mask[:, None, None, :]) * -1e4
        context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(x.shape)
        return self.output(context)


def _flash_tactic():
    from tensorkiln.kernels.cuda.triton import configs
    from tensorkiln.kernels.cuda.triton_tactics import tactic_impl

    return get_kernel(ops.Attention.KIND, "cuda", tactic_impl("flash", configs.ATTENTION_CONFIGS[-1]))


@needs_triton
@pytest.mark.parametrize("batch", [1, 2])
def test_transformer_export_moves_no_data_around_flash_attention(tmp_path, batch):
    """The engine's steps with the Triton attention tactic in place of the CPU one (the layers after the passes are
    the CUDA target's too; only the tactics differ): every shuffle step returns a view of its input."""
    torch.manual_seed(0)
    x, mask = torch.randn(batch, 8, 32), torch.ones(batch, 8)
    mask[-1, 5:] = 0.0
    path = str(tmp_path / "attention.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_SelfAttention().eval(), (x, mask), path, dynamo=False, opset_version=17,
                          input_names=["x", "mask"])
    engine = tk.Builder().build(parse_onnx(path))
    feeds = {"x": x.numpy(), "mask": mask.numpy()}
    expected = engine.create_execution_context().execute(feeds)
    steps, flash, copies = engine.plan.steps, _flash_tactic(), []

    def as_on_cuda(index, launch, args):
        step = steps[index]
        if step.kind == ops.Attention.KIND:  # on a GPU the kernel runs there; its result keeps its strides back here
            results = [r.cpu() for r in flash(step.op, [None if a is None else a.to(DEVICE) for a in args])]
        else:
            results = launch()
        if step.kind == ops.Shuffle.KIND and not _same_memory(results[0], args[0]):
            copies.append(step.name)
        return results

    kinds = [s.kind for s in steps]
    assert kinds.count(ops.Attention.KIND) == 1 and kinds.count(ops.Shuffle.KIND) == 5  # mask, Q, K, V, merge
    outputs = engine.create_execution_context().run_each_step(feeds, as_on_cuda)
    assert copies == []
    for name, value in outputs.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-4, atol=1e-4)
