"""The attention forms recognize_attention now produces, through the Triton flash-attention kernel, against the CPU
reference kernel (tests/passes/test_attention_forms.py checks that one against onnxruntime): grouped-query and
multi-query K/V heads read in place (no repeat), the exporters' NaN guard (fully masked rows give zeros), and a
causal mask together with a padding mask. Runs on a GPU, or in Triton's interpreter without one (triton_support)."""
from __future__ import annotations

import pytest
import torch
from triton_support import DEVICE, DTYPES, check, f32, needs_triton, rand, triton_module

from tensorkiln.ir import ops  # noqa: E402  (after triton_support sets TRITON_INTERPRET)
from tensorkiln.kernels.cpu import attention as cpu_attention  # noqa: E402

pytestmark = [needs_triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # 0 / 0 in the interpreter
NAN, INF = float("nan"), float("inf")


def _padding_mask(batch: int, keys: int, dtype, fully_masked_batch: int | None = None) -> torch.Tensor:
    """[B, 1, 1, Sk] additive: the second half of batch 1's keys masked (dtype min, as Hugging Face writes it)."""
    mask = torch.zeros(batch, 1, 1, keys)
    mask[min(1, batch - 1), ..., keys // 2:] = -INF
    if fully_masked_batch is not None:
        mask[fully_masked_batch] = -INF
    return mask.to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kv_heads", [1, 2], ids=["multi_query", "grouped_query"])
@pytest.mark.parametrize("causal", [False, True], ids=["padding", "causal_and_padding"])
def test_grouped_kv_heads_are_read_in_place(dtype, kv_heads, causal):
    heads, seq, depth = 4, 19, 16
    q = rand(2, heads, seq, depth, dtype=dtype)
    k, v = rand(2, kv_heads, seq, depth, dtype=dtype), rand(2, kv_heads, seq, depth, dtype=dtype)
    mask = _padding_mask(2, seq, dtype)
    op = ops.Attention(0.25, has_mask=True, causal=causal, grouped_kv=True)
    out = triton_module("attention").attention(q, k, v, mask, scale=0.25, causal=causal, grouped_kv=True)
    want = cpu_attention.attention(op, f32(q, k, v, mask))[0]
    repeated = [t.float().cpu().repeat_interleave(heads // kv_heads, dim=1) for t in (k, v)]
    assert torch.allclose(want, cpu_attention.attention(ops.Attention(0.25, True, causal), [
        q.float().cpu(), *repeated, mask.float().cpu()])[0])  # the reference: every query head with its K/V head
    check(out, want, dtype)


def test_grouped_kv_refuses_a_head_count_that_does_not_divide():
    q, k = rand(1, 4, 5, 8), rand(1, 3, 5, 8)
    with pytest.raises(ValueError, match="head count"):
        cpu_attention.attention(ops.Attention(0.5, grouped_kv=True), [q.cpu(), k.cpu(), k.cpu()])


@pytest.mark.parametrize("causal", [False, True], ids=["padding", "causal"])
def test_nan_guard_gives_zeros_for_fully_masked_rows_and_nan_queries(causal):
    """Batch 0: every key masked; batch 1, head 0: query row 2 NaN. The guard makes both rows zeros (without the
    guard the kernel gives NaN there, as tests/gpu/test_triton_nan_inf.py checks)."""
    generator = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, 9, 16, generator=generator) for _ in range(3))
    q[1, 0, 2, 3] = NAN
    mask = _padding_mask(2, 9, torch.float32, fully_masked_batch=0).cpu()
    op = ops.Attention(0.25, has_mask=True, causal=causal, nan_to_zero=True)
    want = cpu_attention.attention(op, [q, k, v, mask])[0]
    assert (want[0] == 0).all() and (want[1, 0, 2] == 0).all() and torch.isfinite(want).all()
    unguarded = cpu_attention.attention(ops.Attention(0.25, has_mask=True, causal=causal), [q, k, v, mask])[0]
    assert torch.isnan(unguarded[0]).all() and torch.isnan(unguarded[1, 0, 2]).all()
    got = triton_module("attention").attention(*(t.to(DEVICE) for t in (q, k, v, mask)), scale=0.25, causal=causal,
                                               nan_to_zero=True)
    check(got, want, torch.float32)
