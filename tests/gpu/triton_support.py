"""What the Triton kernel and tactic tests share: where they run, their inputs, and how they check results.

On a CUDA machine they run on the GPU. Without one they run in Triton's CPU interpreter (TRITON_INTERPRET=1, set
here at import, before the kernel modules are imported: triton.jit reads it when it decorates a kernel), with small
shapes. Without triton (CI) every test that needs it skips; `import tensorkiln` must still work there. Import this
module before tensorkiln's kernels.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
if HAS_TRITON and not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if HAS_CUDA else [])
# relative tolerance: max |out - ref| over max |ref|, the reference computed in FP32 from the same (rounded) inputs
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def triton_module(name: str):
    """A kernel module of tensorkiln.kernels.cuda.triton."""
    return importlib.import_module(f"tensorkiln.kernels.cuda.triton.{name}")


def rand(*shape, dtype=torch.float32, scale=1.0, channels_last=False):
    x = (torch.randn(*shape, generator=rand.gen) * scale).to(DEVICE, dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


rand.gen = torch.Generator().manual_seed(0)


def check(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == dtype
    out, ref = out.float().cpu(), ref.float().cpu()
    assert torch.isfinite(out).all() == torch.isfinite(ref).all()
    error = (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
    assert error <= TOLERANCE[dtype], f"relative error {error:.2e} > {TOLERANCE[dtype]:.0e} ({dtype})"


def f32(*tensors):
    """Reference inputs: FP32 copies on the CPU (no TF32 convolutions or reduced-precision shortcuts there)."""
    return [None if t is None else t.float().cpu() for t in tensors]


def cpu32(tensor):
    return f32(tensor)[0]
