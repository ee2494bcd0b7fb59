"""Measured peaks of this GPU, the denominators of the floors in bench/RESULTS.md: dense FP16 GEMM TFLOP/s
(8192^3, cuBLAS) and device-to-device copy bandwidth (1 GiB). Medians of CUDA-event timings after warm-up."""
from __future__ import annotations

import json
import statistics
import time

import torch


def median_cuda_ms(fn, warmup: int = 5, runs: int = 30) -> float:
    """Median milliseconds of one call, by CUDA events, after warm-up (also gpu_peers.py's timer)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def median_wall_ms(fn, warmup: int = 5, runs: int = 30) -> float:
    """Median milliseconds of one call by the wall clock, after warm-up (CPU engines, host-side costs)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def median_ms(fn, device: str, warmup: int = 5, runs: int = 30) -> float:
    """Median milliseconds of one call after warm-up: CUDA events on the GPU, the wall clock on the CPU."""
    return (median_cuda_ms if device == "cuda" else median_wall_ms)(fn, warmup, runs)


def measure() -> dict[str, float]:
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.float16) for _ in range(2))
    gemm_ms = median_cuda_ms(lambda: a @ b)
    source = torch.randn(2**28, device="cuda")  # 1 GiB of fp32
    target = torch.empty_like(source)
    copy_ms = median_cuda_ms(lambda: target.copy_(source))
    return {"device": torch.cuda.get_device_name(), "fp16_gemm_tflops": 2 * n**3 / gemm_ms / 1e9,
            "copy_gb_per_s": 2 * source.numel() * 4 / copy_ms / 1e6}  # a copy reads and writes every byte


if __name__ == "__main__":
    print(json.dumps(measure()))
