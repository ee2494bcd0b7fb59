"""BERT-base's attention at sequence 128, as its engine runs it: Q, K and V are head-split views of the fused QKV
projection's output, with an additive padding mask [B, 1, 1, S]. PyTorch's SDPA (the `torch` tactic) against
the Triton flash-attention kernel per tile config, each checked against FP32 first, then timed as CUDA-graph
replays; and the floor, reading Q, K, V and writing the output once at the measured copy rate.

    python bench/attention_variants.py [--batch 128] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tensorkiln.kernels.cuda.triton import attention as triton_attention  # noqa: E402
from tensorkiln.kernels.cuda.triton.configs import AttentionConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gemm_variants import checked_ms, graph_ms  # noqa: E402

CONFIGS = [AttentionConfig(bm, bn, warps, stages) for bm, bn, warps, stages in
           ((128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (64, 32, 4, 4), (64, 32, 4, 2), (128, 32, 8, 3),
            (128, 32, 4, 3), (32, 32, 2, 3), (32, 64, 2, 3), (32, 32, 4, 3), (64, 16, 4, 4), (64, 32, 2, 3))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    batch, seq, heads, dim = args.batch, 128, 12, 64
    qkv = torch.randn(batch, seq, 3 * heads * dim, device="cuda", dtype=torch.float16)
    q, k, v = (part.reshape(batch, seq, heads, dim).transpose(1, 2) for part in qkv.split(heads * dim, dim=-1))
    lengths = torch.randint(seq // 2, seq + 1, (batch,), device="cuda")
    mask = torch.where(torch.arange(seq, device="cuda")[None, :] < lengths[:, None], 0.0, -10000.0)
    mask = mask.to(torch.float16).view(batch, 1, 1, seq)
    scale = dim ** -0.5
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask.float(), scale=scale)
    moved = 4 * batch * seq * heads * dim * 2
    copy_ms = graph_ms(lambda: qkv.clone())  # 2 x the bytes of Q, K, V: a rate for the floor
    floor_ms = copy_ms * moved / (2 * qkv.numel() * 2)
    rows = [{"variant": "floor (Q, K, V read, O written at the copy rate)", "us": floor_ms * 1e3}]
    print(f"batch {batch}: floor {floor_ms * 1e3:.1f} us ({moved / 1e6:.0f} MB at the copy rate)", flush=True)

    def timed(name, run):
        result = checked_ms(name, run, reference)
        if result is None:
            return
        ms, error = result
        rows.append({"variant": name, "us": ms * 1e3, "error": error})
        print(f"{name:40s} {ms * 1e3:8.1f} us  error {error:.1e}", flush=True)

    timed("torch sdpa (mask)", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale))
    unmasked_ms = graph_ms(lambda: F.scaled_dot_product_attention(q, k, v, scale=scale))  # another result: unchecked
    rows.append({"variant": "torch sdpa without the mask (flash; not the same result)", "us": unmasked_ms * 1e3})
    print(f"{'torch sdpa without the mask (flash)':40s} {unmasked_ms * 1e3:8.1f} us  (not the same result)")
    for config in CONFIGS:
        timed(f"triton {config.name}", lambda: triton_attention.attention(q, k, v, mask, scale=scale, config=config))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"attention_b{batch}.json").write_text(
        json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
