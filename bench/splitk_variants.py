"""Split-K configs of the Triton implicit-GEMM convolution and GEMM on ResNet-50's batch-1 layers, against cuDNN
and cuBLASLt, each timed as the tactic timer times it (inside a CUDA graph) after its output is checked against
PyTorch in FP32. Also the input reformat an engine runs first (FP32 NCHW image to FP16 NHWC).

    python bench/splitk_variants.py [--out DIR]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tensorkiln.ir import ops  # noqa: E402
from tensorkiln.kernels.cuda import triton_tactics  # noqa: E402
from tensorkiln.kernels.cuda.triton.configs import GemmConfig  # noqa: E402
from tensorkiln.tactics.selection import kernel_for_tactic  # noqa: E402
from tensorkiln.tactics.timing import gpu_milliseconds  # noqa: E402

RELU = ops.ActivationType.RELU
# (channels in, size, channels out, kernel): ResNet-50's batch-1 layers the timer gave cuDNN or split-K
CONVS = {"l2 conv2 3x3": (128, 28, 128, 3), "l3 conv2 3x3": (256, 14, 256, 3), "l4 conv2 3x3": (512, 7, 512, 3),
         "l3 conv1 1x1": (1024, 14, 256, 1), "l4 conv1 1x1": (2048, 7, 512, 1)}
CONFIGS = [GemmConfig(m, n, k, 8, 4, s, split_k=split)
           for m, n, k, s, split in itertools.product((16, 32, 64), (32, 64, 128), (64, 128), (3,), (2, 4, 8, 16))]
CONFIGS.append(GemmConfig(64, 64, 64, 8, 4, 3, split_k=0))  # the registered one


def checked(run, reference, tolerance=1e-2):
    try:
        error = float((run().float() - reference).abs().max() / reference.abs().max())
    except Exception as failure:  # noqa: BLE001 (Triton compile errors have many types)
        return {"failed": f"{type(failure).__name__}: {str(failure)[:200]}"}
    if error > tolerance:
        return {"error": error, "failed": "mismatch"}
    return {"error": error, "us": round(gpu_milliseconds(run, 30) * 1e3, 2)}


def sweep(label, op, inputs, reference, tactics) -> dict:
    runs = {name: (lambda fn=fn: fn(op, inputs)[0]) for name, fn in tactics.items()}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # compile them side by side first
        list(pool.map(lambda run: _try(run), runs.values()))
    results = {name: checked(run, reference) for name, run in runs.items()}
    timed = sorted((r["us"], name) for name, r in results.items() if "us" in r)
    print(label, "best:", timed[:6], flush=True)
    return results


def _try(run):
    try:
        run()
    except Exception:  # noqa: BLE001
        pass


def triton_tactics_for(fn):
    return {f"triton_{c.name}": (lambda op, inputs, c=c: fn(op, inputs, c)) for c in CONFIGS}


def reformat_kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def nchw_to_nhwc(x_ptr, y_ptr, C, HW, BLOCK: tl.constexpr, CB: tl.constexpr):
        n = tl.program_id(1).to(tl.int64)
        pixels = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        channels = tl.arange(0, CB)
        mask = (pixels[:, None] < HW) & (channels[None, :] < C)
        value = tl.load(x_ptr + n * C * HW + channels[None, :] * HW + pixels[:, None], mask=mask)
        tl.store(y_ptr + n * HW * C + pixels[:, None] * C + channels[None, :], value.to(y_ptr.dtype.element_ty),
                 mask=mask)

    def run(x, y, block):
        n, c, h, w = x.shape
        nchw_to_nhwc[(triton.cdiv(h * w, block), n)](x, y, c, h * w, BLOCK=block, CB=triton.next_power_of_2(c))
        return y
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name()}
    cudnn = kernel_for_tactic("cuda.fused_convolution.cudnn_fused", "cuda")
    cublaslt_1x1 = kernel_for_tactic("cuda.fused_convolution.cublaslt_1x1", "cuda")
    for label, (c, size, k, r) in CONVS.items():
        x = torch.randn(1, c, size, size, device="cuda").half().contiguous(memory_format=torch.channels_last)
        w = (torch.randn(k, c, r, r, device="cuda") / (c * r * r) ** 0.5).half().contiguous(
            memory_format=torch.channels_last)
        b = torch.randn(k, device="cuda").half()
        op = ops.FusedConvolution((1, 1), (r // 2,) * 4, (1, 1), activation=RELU)
        reference = F.relu(F.conv2d(x.float(), w.float(), b.float(), padding=r // 2))
        tactics = {"cudnn_fused": cudnn, **triton_tactics_for(triton_tactics.fused_convolution)}
        if r == 1:
            tactics["cublaslt_1x1"] = cublaslt_1x1
        results[label] = sweep(label, op, [x, w, b, None, None], reference, tactics)
    a = torch.randn(1, 2048, device="cuda").half()
    w = (torch.randn(1000, 2048, device="cuda") / 2048**0.5).half()
    b = torch.randn(1000, device="cuda").half()
    op = ops.FusedMatMul(transpose_b=True)
    tactics = {"cublaslt_epilogue": kernel_for_tactic("cuda.fused_matmul.cublaslt_epilogue", "cuda"),
               **triton_tactics_for(triton_tactics.fused_matmul)}
    results["fc"] = sweep("fc", op, [a, w, b, None, None], a.float() @ w.float().t() + b.float(), tactics)

    image = torch.randn(1, 3, 224, 224, device="cuda")
    held = torch.empty(1, 3, 224, 224, device="cuda", dtype=torch.float16, memory_format=torch.channels_last)
    reformat = reformat_kernels()
    results["reformat"] = {"copy_": checked(lambda: held.copy_(image), image)}
    for block in (256, 512, 1024, 2048):
        results["reformat"][f"triton_{block}"] = checked(lambda block=block: reformat(image, held, block), image)
    print("reformat", results["reformat"], flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "splitk_variants.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
