"""BERT-base b128's LayerNorm ([16384, 768] FP16 with scale and bias): PyTorch's kernel against the Triton kernels
(norms.py) per rows-per-program and warp count, each checked against FP32 first, then timed as CUDA-graph replays;
and the floor, reading the input and writing the output once at the measured copy rate.

    python bench/norm_variants.py [--rows 16384] [--width 768] [--out DIR]
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
from tensorkiln.kernels.cuda.triton import norms  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gemm_variants import checked_ms, graph_ms  # noqa: E402

VARIANTS = [(rows, warps) for rows in (1, 2, 4, 8, 16) for warps in (0, 2, 4, 8, 16) if rows > 1 or warps <= 4]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    x = torch.randn(args.rows, args.width, device="cuda", dtype=torch.float16)
    weight = torch.randn(args.width, device="cuda", dtype=torch.float16)
    bias = torch.randn(args.width, device="cuda", dtype=torch.float16)
    reference = F.layer_norm(x.float(), (args.width,), weight.float(), bias.float(), eps=1e-12)
    floor_ms = graph_ms(lambda: x.clone())  # reads and writes the bytes a LayerNorm must
    rows = [{"variant": "floor (x read, y written at the copy rate)", "us": floor_ms * 1e3}]
    print(f"[{args.rows}, {args.width}]: floor {floor_ms * 1e3:.1f} us", flush=True)

    def timed(name, run):
        result = checked_ms(name, run, reference)
        if result is not None:
            rows.append({"variant": name, "us": result[0] * 1e3, "error": result[1]})
            print(f"{name:40s} {result[0] * 1e3:8.1f} us  {100 * floor_ms / result[0]:4.0f}% of the copy rate",
                  flush=True)

    timed("torch F.layer_norm", lambda: F.layer_norm(x, (args.width,), weight, bias, eps=1e-12))
    for per_program, warps in VARIANTS:
        timed(f"triton rows {per_program} warps {warps or 'auto'}", lambda: norms.layer_norm(
            x, weight, bias, eps=1e-12, rows=per_program, num_warps=warps or None))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "norm_variants.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows},
                                                               indent=1))


if __name__ == "__main__":
    main()
