"""ResNet-50's stem (7x7 stride-2 convolution of 3 channels) against equivalent forms, on cuDNN.

    python bench/stem_variants.py [--batches 256,1] [--out DIR]

The stem is the largest single step of ResNet-50 b256 (0.58 ms of 6.2 ms on an H200, cuDNN): 3 input channels
make a poor GEMM. The space-to-depth form (MLPerf's TPU ResNet) pads the image by 4 before and 2 after, folds each
2x2 pixel block into 12 channels (16 with zero channels, for 16-byte rows), and runs a 4x4 stride-1 convolution
with rearranged weights: the same function. The other forms pad the 3 channels with zero channels to 4 or 8 (zero
weights for them). This times each convolution as the engine calls cuDNN (`torch.cudnn_convolution_relu`: bias and
ReLU fused; FP16, channels-last, cuDNN's autotuner on), each checked against the 7x7 first, and the input
rearrangement each needs.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_peaks import median_cuda_ms  # noqa: E402

WARMUP, RUNS = 10, 50


def space_to_depth(x: torch.Tensor, channels: int) -> torch.Tensor:
    """[N, 3, 224, 224] -> [N, channels, 115, 115]: pad 4 before and 2 after, each 2x2 block's (row, column, channel)
    as channels, zero channels up to `channels`; channels-last."""
    padded = F.pad(x, (4, 2, 4, 2))
    n, c, h, w = padded.shape
    folded = padded.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
    folded = F.pad(folded, (0, 0, 0, 0, 0, channels - 4 * c))
    return folded.contiguous(memory_format=torch.channels_last)


def space_to_depth_weights(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """[64, 3, 7, 7] stride 2 -> [64, channels, 4, 4] stride 1: tap k of the 7 becomes tap k + 1 of 8 (the padding
    of 4 instead of 3), and tap 2a + b is the b-th pixel of block a."""
    out, c = weight.shape[:2]
    taps = F.pad(weight, (1, 0, 1, 0))
    folded = taps.reshape(out, c, 4, 2, 4, 2).permute(0, 3, 5, 1, 2, 4).reshape(out, 4 * c, 4, 4)
    return F.pad(folded, (0, 0, 0, 0, 0, channels - 4 * c)).contiguous(memory_format=torch.channels_last)


def padded_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1])).contiguous(memory_format=torch.channels_last)


def conv_relu(x, weight, bias, stride, padding):
    return torch.cudnn_convolution_relu(x, weight, bias, [stride, stride], [padding, padding], [1, 1], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="256,1")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(64, 3, 7, 7, generator=generator) * 0.1).cuda().half()
    bias = torch.randn(64, generator=generator).cuda().half()
    results = {"device": torch.cuda.get_device_name()}
    for batch in map(int, args.batches.split(",")):
        x = torch.randn(batch, 3, 224, 224, generator=generator).cuda().half()
        x = x.contiguous(memory_format=torch.channels_last)
        stem_weight = weight.contiguous(memory_format=torch.channels_last)
        reference = conv_relu(x, stem_weight, bias, 2, 3).float()
        results[f"b{batch} 7x7 stride 2, 3 channels"] = median_cuda_ms(
            lambda: conv_relu(x, stem_weight, bias, 2, 3), WARMUP, RUNS)
        forms = [(f"7x7 stride 2, {c} channels", functools.partial(padded_channels, channels=c),
                  padded_channels(weight, c), 2, 3) for c in (4, 8)]
        forms += [(f"4x4 stride 1, {c} channels (space-to-depth)", functools.partial(space_to_depth, channels=c),
                   space_to_depth_weights(weight, c), 1, 0) for c in (12, 16)]
        for label, rearrange, form_weight, stride, padding in forms:
            form_x = rearrange(x)
            error = float((conv_relu(form_x, form_weight, bias, stride, padding).float() - reference).abs().max()
                          / reference.abs().max())
            if error > 1e-2:
                raise SystemExit(f"{label} differs from the stem: {error:.1e}")
            results[f"b{batch} {label} (error {error:.1e})"] = median_cuda_ms(
                lambda: conv_relu(form_x, form_weight, bias, stride, padding), WARMUP, RUNS)
            results[f"b{batch} {label}: rearranging the input"] = median_cuda_ms(lambda: rearrange(x), WARMUP, RUNS)
        y = reference.half().contiguous(memory_format=torch.channels_last)
        results[f"b{batch} max pooling 3x3 stride 2 (PyTorch)"] = median_cuda_ms(
            lambda: F.max_pool2d(y, 3, 2, 1), WARMUP, RUNS)
    text = json.dumps(results, indent=1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "stem_variants.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
