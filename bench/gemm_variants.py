"""The Triton GEMMs (gemm.py, and the experimental persistent TMA GEMM of gemm_tma.py) against cuBLAS on the large
projections of BERT-base b128 (M = 16,384 tokens), per tile config and epilogue: where the FFN up-projection with its
GELU loses time. Each result is checked against torch first.
Every candidate is timed as a replay of a CUDA graph that holds it, as engines run it: a Triton launch from Python
costs more CPU time than the kernel takes, and eager timings would include it.

    python bench/gemm_variants.py [--out DIR]
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
from tensorkiln.ir.ops import ActivationType as A  # noqa: E402
from tensorkiln.kernels.cuda.triton import gemm as triton_gemm  # noqa: E402
from tensorkiln.kernels.cuda.triton import gemm_tma  # noqa: E402
from tensorkiln.kernels.cuda.triton.configs import GemmConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peaks import median_cuda_ms  # noqa: E402

CONFIGS = [GemmConfig(128, 128, 32, 8, 4, 4), GemmConfig(128, 128, 64, 8, 4, 3), GemmConfig(128, 128, 64, 8, 8, 4),
           GemmConfig(128, 256, 64, 8, 8, 3), GemmConfig(64, 256, 64, 8, 4, 4), GemmConfig(256, 128, 64, 8, 8, 3)]
SHAPES = {"up (K 768, N 3072)": (16384, 768, 3072), "down (K 3072, N 768)": (16384, 3072, 768),
          "qkv (K 768, N 2304)": (16384, 768, 2304)}


def graph_ms(fn) -> float:
    """Median ms of `fn`, captured once in a CUDA graph and replayed (after a warm-up that compiles it)."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return median_cuda_ms(graph.replay, 10, 50)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    rows = []
    for label, (m, k, n) in SHAPES.items():
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16) / k**0.5
        bias = torch.randn(n, device="cuda", dtype=torch.float16)
        flops = 2 * m * n * k
        reference = {None: torch.addmm(bias.float(), x.float(), w.float().t())}
        reference[A.GELU_ERF] = F.gelu(reference[None])

        def add(name, ms):
            rows.append({"shape": label, "variant": name, "ms": ms, "tflops": flops / ms / 1e9})
            print(f"{label:22s} {name:44s} {ms * 1e3:8.1f} us {flops / ms / 1e9:6.0f} TFLOP/s", flush=True)

        add("cublas addmm (bias epilogue)", graph_ms(lambda: torch.addmm(bias, x, w.t())))
        add("cublas addmm + F.gelu", graph_ms(lambda: F.gelu(torch.addmm(bias, x, w.t()))))
        add("cublaslt gelu-tanh epilogue", graph_ms(lambda: torch._addmm_activation(bias, x, w.t(), use_gelu=True)))

        def checked(name, run, act):
            """Time `run` if its result matches the reference (a kernel that fails to build is reported, not timed:
            the experimental TMA GEMM has not met Triton 3.6 before)."""
            try:
                error = float((run().float() - reference[act]).abs().max() / reference[act].abs().max())
            except Exception as failure:  # noqa: BLE001 (compile errors of any kind)
                print(f"{label} {name}: failed: {type(failure).__name__}: {str(failure)[:200]}")
                return
            if error > 1e-2:
                print(f"{label} {name}: error {error:.1e}, not timed")
                return
            add(name, graph_ms(run))

        activations = (None, A.GELU_ERF) if label.startswith("up") else (None,)
        for config in CONFIGS:
            for act in activations:
                checked(f"triton {config.name} {act.value if act else 'bias'}",
                        lambda: triton_gemm.gemm(x, w, transpose_b=True, bias=bias, activation=act, config=config), act)
        for config in gemm_tma.TMA_CONFIGS:  # the experimental persistent TMA GEMM (gemm_tma.py)
            for act in activations:
                checked(f"triton-tma {config.name} {act.value if act else 'bias'}",
                        lambda: gemm_tma.gemm_tma(x, w, bias=bias, activation=act, config=config), act)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "gemm_variants.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows},
                                                               indent=1))


if __name__ == "__main__":
    main()
