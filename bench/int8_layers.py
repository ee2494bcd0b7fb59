"""Per-layer INT8 and FP8 kernels against FP16 cuDNN on ResNet-50's convolutions (issue 19): where can an integer or
FP8 kernel win on this GPU, and with which tiles?

For each distinct convolution of ResNet-50 at the given batch (channels-last activations, bias + ReLU epilogue),
one process times with CUDA events (median after warm-up, random inputs):
  - cuDNN FP16 (torch conv2d + bias, then relu_),
  - tensorkiln's Triton INT8 implicit-GEMM kernel, INT8 in and INT8 out (as between linked integer layers), for every
    tile config below,
  - cuBLASLt INT8 (torch._int_mm) for 1x1 convolutions, INT8 in, with the dequantize epilogue in torch,
  - the persistent TMA INT8 GEMM (int8_gemm_tma.py) for 1x1 convolutions, INT8 in and out,
  - FP8 E4M3 (torch._scaled_mm, bias fused, FP16 out) for 1x1 convolutions, FP8 in.
Then BERT-base b128's four GEMMs: cuBLAS FP16 with the bias against the TMA INT8 GEMM, `_int_mm` and FP8 `_scaled_mm`.
Each candidate's output is checked against the FP32 result of the same quantized operands before its time counts.
Writes a JSON line per layer to stdout and --out.

    python bench/int8_layers.py --batch 256 --out int8_layers.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.gpu_peaks import median_cuda_ms  # noqa: E402
from tensorkiln.kernels.cuda.triton import int8_gemm, int8_gemm_tma  # noqa: E402
from tensorkiln.ir.ops import ActivationType as A  # noqa: E402
from tensorkiln.kernels.cuda.triton.configs import GemmConfig, TmaGemmConfig  # noqa: E402

# (in channels, out channels, kernel, stride, input size): the distinct convolutions of ResNet-50 after the stem
RESNET50_CONVS = (
    (64, 64, 1, 1, 56), (64, 64, 3, 1, 56), (64, 256, 1, 1, 56), (256, 64, 1, 1, 56),
    (256, 128, 1, 1, 56), (128, 128, 3, 2, 56), (128, 512, 1, 1, 28), (512, 128, 1, 1, 28), (128, 128, 3, 1, 28),
    (512, 256, 1, 1, 28), (256, 256, 3, 1, 14), (256, 1024, 1, 1, 14), (1024, 256, 1, 1, 14),
    (1024, 512, 1, 1, 14), (512, 512, 3, 1, 7), (512, 2048, 1, 1, 7), (2048, 512, 1, 1, 7),
)
TMA_CONFIGS = tuple(TmaGemmConfig(tiles, programs_per_sm=per_sm, tma_store=store)
                    for tiles in (GemmConfig(128, 128, 128, 8, 8, 3), GemmConfig(128, 256, 128, 8, 8, 3),
                                  GemmConfig(128, 256, 64, 8, 8, 4), GemmConfig(128, 128, 64, 8, 4, 4))
                    for store in (False, True) for per_sm in (1, 2) if not (per_sm == 2 and tiles.block_n == 256))
CONFIGS = (GemmConfig(128, 128, 64, 8, 8, 3), GemmConfig(128, 128, 128, 8, 8, 3), GemmConfig(128, 256, 64, 8, 8, 3),
           GemmConfig(256, 128, 64, 8, 8, 3), GemmConfig(128, 128, 128, 8, 4, 4), GemmConfig(128, 64, 128, 8, 4, 4),
           GemmConfig(64, 128, 128, 8, 4, 4), GemmConfig(128, 256, 128, 8, 8, 3))


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.float() - reference).norm() / reference.norm().clamp_min(1e-12))


def run_layer(batch: int, c: int, k: int, r: int, stride: int, size: int, runs: int) -> dict:
    pad = r // 2
    x = torch.randn(batch, c, size, size, device="cuda").relu_()
    w = torch.randn(k, c, r, r, device="cuda") / (c * r * r) ** 0.5
    bias = torch.randn(k, device="cuda") * 0.1
    s_x = float(x.abs().amax()) / 127
    s_w = w.abs().amax(dim=(1, 2, 3)) / 127
    q_x = torch.round(x / s_x).clamp(-128, 127)
    q_w = torch.round(w / s_w[:, None, None, None]).clamp(-128, 127)
    reference = F.conv2d(q_x * s_x, q_w * s_w[:, None, None, None], bias, stride, pad).relu()
    row: dict = {"layer": f"{c}->{k} {r}x{r}/{stride} @{size}", "batch": batch,
                 "gflop": 2 * reference.numel() * c * r * r / 1e9}

    x16 = x.half().contiguous(memory_format=torch.channels_last)
    w16 = w.half().contiguous(memory_format=torch.channels_last)
    b16 = bias.half()
    fp16 = lambda: torch.cudnn_convolution_relu(x16, w16, b16, (stride, stride), (pad, pad), (1, 1), 1)  # noqa: E731
    row["cudnn_fp16_err"] = relative_error(fp16(), reference.float().relu())
    row["cudnn_fp16_ms"] = median_cuda_ms(fp16, runs=runs)

    qx8 = q_x.to(torch.int8).contiguous(memory_format=torch.channels_last)
    qw8 = q_w.to(torch.int8).permute(0, 2, 3, 1).contiguous()  # [K, R, S, C]
    scales = (s_x * s_w).float()
    out_scale = float(reference.abs().amax()) / 127
    for config in CONFIGS:
        def triton_int8(config=config):
            return int8_gemm.int8_conv2d(qx8, qw8, scales, s_x, bias, stride=(stride, stride), pads=(pad,) * 4,
                                         dilation=(1, 1), config=config, activation=A.RELU, out_dtype=torch.float16,
                                         output_scale=out_scale)
        key = f"triton_int8_{config.name}"
        try:
            error = relative_error(triton_int8().float() * out_scale, reference)
            row[key + "_err"] = error
            if error < 0.02:
                row[key + "_ms"] = median_cuda_ms(triton_int8, runs=runs)
        except Exception as failure:  # noqa: BLE001 (a config that does not compile must not hide the others)
            row[key] = f"FAILED {type(failure).__name__}: {str(failure)[:160]}"

    if r == 1:
        pixels = qx8[:, :, ::stride, ::stride].permute(0, 2, 3, 1).reshape(-1, c)
        pixels = pixels.contiguous()
        wt = qw8.view(k, c).t()

        def cublas_int8():
            acc = torch._int_mm(pixels, wt)
            return torch.addcmul(bias, acc, scales).relu_().half()
        row["cublaslt_int8_err"] = relative_error(cublas_int8(), reference.permute(0, 2, 3, 1).reshape(-1, k))
        row["cublaslt_int8_ms"] = median_cuda_ms(cublas_int8, runs=runs)
        row["cublaslt_int8_mm_only_ms"] = median_cuda_ms(lambda: torch._int_mm(pixels, wt), runs=runs)
        rows_reference = reference.permute(0, 2, 3, 1).reshape(-1, k)
        for config in TMA_CONFIGS:
            def tma(config=config):
                return int8_gemm_tma.int8_gemm_tma(pixels, qw8.view(k, c), scales, config=config,
                                                   out_dtype=torch.float16, bias=bias, activation=A.RELU,
                                                   output_scale=out_scale)
            key = f"tma_int8_{config.name}"
            try:
                row[key + "_err"] = relative_error(tma().float() * out_scale, rows_reference)
                row[key + "_ms"] = median_cuda_ms(tma, runs=runs)
            except Exception as failure:  # noqa: BLE001
                row[key] = f"FAILED {type(failure).__name__}: {str(failure)[:160]}"

        s_x8, s_w8 = float(x.abs().amax()) / 448, float(w.abs().amax()) / 448  # per-tensor FP8 E4M3 scales
        x8 = (x[:, :, ::stride, ::stride].permute(0, 2, 3, 1).reshape(-1, c) / s_x8).to(torch.float8_e4m3fn)
        w8 = (w.view(k, c) / s_w8).to(torch.float8_e4m3fn)
        s_x8, s_w8 = (torch.tensor(value, device="cuda") for value in (s_x8, s_w8))

        def fp8():
            return torch._scaled_mm(x8, w8.t(), scale_a=s_x8, scale_b=s_w8, bias=b16, out_dtype=torch.float16)
        try:
            row["fp8_scaled_mm_err"] = relative_error(fp8().float().relu(), reference.permute(0, 2, 3, 1)
                                                      .reshape(-1, k))
            row["fp8_scaled_mm_ms"] = median_cuda_ms(fp8, runs=runs)
        except Exception as failure:  # noqa: BLE001
            row["fp8_scaled_mm"] = f"FAILED {type(failure).__name__}: {str(failure)[:160]}"
    return row


# BERT-base b128 s128's GEMMs: (M tokens, K, N)
BERT_GEMMS = ((16384, 768, 2304), (16384, 768, 768), (16384, 768, 3072), (16384, 3072, 768))


def run_gemm(m: int, k: int, n: int, runs: int) -> dict:
    """cuBLAS FP16 (bias fused: addmm) against the TMA INT8 GEMM (INT8 in, FP16 out, bias fused), `_int_mm` alone and
    FP8 `_scaled_mm` (bias fused, FP16 out)."""
    x = torch.randn(m, k, device="cuda")
    w = torch.randn(n, k, device="cuda") / k ** 0.5
    bias = torch.randn(n, device="cuda") * 0.1
    s_x, s_w = float(x.abs().amax()) / 127, w.abs().amax(dim=1) / 127
    q_x, q_w = torch.round(x / s_x).clamp(-128, 127), torch.round(w / s_w[:, None]).clamp(-128, 127)
    reference = (q_x * s_x) @ (q_w * s_w[:, None]).t() + bias
    row: dict = {"layer": f"GEMM {m}x{k} by {k}x{n}", "gflop": 2 * m * n * k / 1e9}
    x16, w16, b16 = x.half(), w.half(), bias.half()
    row["cublas_fp16_ms"] = median_cuda_ms(lambda: torch.addmm(b16, x16, w16.t()), runs=runs)
    qx8, qw8, scales = q_x.to(torch.int8), q_w.to(torch.int8), (s_x * s_w).float()
    row["cublaslt_int8_mm_only_ms"] = median_cuda_ms(lambda: torch._int_mm(qx8, qw8.t()), runs=runs)
    for config in TMA_CONFIGS:
        def tma(config=config):
            return int8_gemm_tma.int8_gemm_tma(qx8, qw8, scales, config=config, out_dtype=torch.float16, bias=bias)
        key = f"tma_int8_{config.name}"
        try:
            row[key + "_err"] = relative_error(tma(), reference)
            row[key + "_ms"] = median_cuda_ms(tma, runs=runs)
        except Exception as failure:  # noqa: BLE001
            row[key] = f"FAILED {type(failure).__name__}: {str(failure)[:160]}"
    s_x8, s_w8 = float(x.abs().amax()) / 448, float(w.abs().amax()) / 448
    x8, w8 = (x / s_x8).to(torch.float8_e4m3fn), (w / s_w8).to(torch.float8_e4m3fn)
    s_x8, s_w8 = (torch.tensor(value, device="cuda") for value in (s_x8, s_w8))

    def fp8():
        return torch._scaled_mm(x8, w8.t(), scale_a=s_x8, scale_b=s_w8, bias=b16, out_dtype=torch.float16)
    row["fp8_scaled_mm_err"] = relative_error(fp8(), reference)
    row["fp8_scaled_mm_ms"] = median_cuda_ms(fp8, runs=runs)
    row["fp8_quantize_input_ms"] = median_cuda_ms(lambda: (x16 * (1 / s_x8)).clamp_(-448, 448).to(torch.float8_e4m3fn),
                                                  runs=runs)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", default="int8_layers.jsonl")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = [lambda item=item: run_layer(args.batch, *item, args.runs) for item in RESNET50_CONVS]
    work += [lambda item=item: run_gemm(*item, args.runs) for item in BERT_GEMMS]
    with open(args.out, "w") as out:
        for job in work:
            row = job()
            line = json.dumps(row)
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()


if __name__ == "__main__":
    main()
