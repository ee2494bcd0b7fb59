"""The Triton GEMMs (gemm.py, and the persistent TMA GEMM of gemm_tma.py per config) against cuBLAS on BERT-base
b128's projections (M = 16,384 tokens) and on ResNet-50 b256's 1x1 convolutions as GEMMs over NHWC (M = 802,816 or
200,704 pixels), each with its epilogue: bias, GELU, ReLU, or residual add and ReLU. Each result is checked against
torch in FP32 first. Every candidate is timed as a replay of a CUDA graph that holds it, as engines run it: a Triton
launch from Python costs more CPU time than the kernel takes, and eager timings would include it.

    python bench/gemm_variants.py [--shapes "bert up,resnet"] [--out DIR]
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

# the pointer-based GEMM's best two on these shapes (the rest of its configs lost by 20-50% at f8a77d1)
CONFIGS = [GemmConfig(128, 128, 64, 8, 4, 3), GemmConfig(128, 128, 64, 8, 8, 4)]
# (M, K, N, epilogue): BERT-base b128's projections, and ResNet-50 b256's 1x1 convolutions as GEMMs over NHWC
# ("residual": + residual, then ReLU, as conv3 of a bottleneck)
SHAPES = {"bert up (K 768, N 3072)": (16384, 768, 3072, "gelu"),
          "bert down (K 3072, N 768)": (16384, 3072, 768, "bias"),
          "bert qkv (K 768, N 2304)": (16384, 768, 2304, "bias"),
          "resnet l1 conv3 (K 64, N 256)": (802816, 64, 256, "residual"),
          "resnet l1 conv1 (K 256, N 64)": (802816, 256, 64, "relu"),
          "resnet l2 conv3 (K 128, N 512)": (200704, 128, 512, "residual")}


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


def checked_ms(name: str, run, reference: torch.Tensor, tolerance: float = 1e-2) -> tuple[float, float] | None:
    """(graph-timed ms, relative error) of `run` where its result matches `reference`; None, with the reason
    printed, where it fails to build or run (any exception: Triton's compile errors have many types) or is off."""
    try:
        error = float((run().float() - reference).abs().max() / reference.abs().max())
    except Exception as failure:  # noqa: BLE001
        print(f"{name}: failed: {type(failure).__name__}: {str(failure)[:300]}", flush=True)
        return None
    if error > tolerance:
        print(f"{name}: error {error:.1e}, not timed", flush=True)
        return None
    return graph_ms(run), error


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--shapes", default="", help="comma-separated prefixes of SHAPES to run (default: all)")
    args = parser.parse_args()
    rows = []
    wanted = [prefix.strip() for prefix in args.shapes.split(",") if prefix.strip()]
    for label, (m, k, n, epilogue) in SHAPES.items():
        if wanted and not any(label.startswith(prefix) for prefix in wanted):
            continue
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16) / k**0.5
        bias = torch.randn(n, device="cuda", dtype=torch.float16)
        res = torch.randn(m, n, device="cuda", dtype=torch.float16) if epilogue == "residual" else None
        flops = 2 * m * n * k
        moved = 2 * (m * k + n * k + m * n * (2 if res is not None else 1))  # bytes read and written once
        exact = torch.addmm(bias.float(), x.float(), w.float().t())
        act = {"gelu": A.GELU_ERF, "relu": A.RELU}.get(epilogue)
        post = A.RELU if res is not None else None
        finish = {"gelu": F.gelu, "relu": F.relu, "bias": lambda t: t, "residual": lambda t: F.relu(t + res.float())}
        reference = finish[epilogue](exact)
        del exact

        def add(name, ms):
            rows.append({"shape": label, "variant": name, "ms": ms, "tflops": flops / ms / 1e9,
                         "gbps": moved / ms / 1e6})
            print(f"{label:30s} {name:48s} {ms * 1e3:8.1f} us {flops / ms / 1e9:6.0f} TFLOP/s "
                  f"{moved / ms / 1e6:6.0f} GB/s", flush=True)

        def checked(name, run):
            timed = checked_ms(f"{label} {name}", run, reference)
            if timed is not None:
                add(name, timed[0])

        if epilogue == "gelu":
            checked("cublas addmm + F.gelu", lambda: F.gelu(torch.addmm(bias, x, w.t())))
            add("(cublaslt gelu-tanh epilogue, not exact)",
                graph_ms(lambda: torch._addmm_activation(bias, x, w.t(), use_gelu=True)))
        elif epilogue == "relu":
            checked("cublaslt relu epilogue", lambda: torch._addmm_activation(bias, x, w.t()))
        elif epilogue == "residual":
            checked("cublas addmm + add + relu", lambda: F.relu(torch.addmm(bias, x, w.t()).add_(res)))
        else:
            checked("cublas addmm (bias epilogue)", lambda: torch.addmm(bias, x, w.t()))
        for config in CONFIGS:
            checked(f"triton {config.name}", lambda: triton_gemm.gemm(
                x, w, transpose_b=True, bias=bias, activation=act, residual=res, post_activation=post, config=config))
        for config in gemm_tma.TMA_CONFIGS:  # the experimental persistent TMA GEMM (gemm_tma.py)
            checked(f"triton {config.name}", lambda: gemm_tma.gemm_tma(
                x, w, bias=bias, activation=act, residual=res, post_activation=post, config=config))
        del x, w, res
        torch.cuda.empty_cache()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "gemm_variants.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows},
                                                               indent=1))


if __name__ == "__main__":
    main()
