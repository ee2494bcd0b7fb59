"""DFT and STFT on torch.fft; a complex value is a trailing pair (real, imaginary), as ONNX stores it."""
from __future__ import annotations

import torch

from ...ir import ops
from ..registry import kernel


def _complex(x: torch.Tensor) -> torch.Tensor:
    """[..., 1] real or [..., 2] complex pairs -> a complex tensor of shape [...].

    float32 signals are transformed in complex64 as the ONNX reference does: its rounding noise on values that
    are exactly zero lies above the conformance cases' atol, so a double-precision result would not match."""
    x = x.double() if x.dtype == torch.float64 else x.float()
    complex_dtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    return torch.complex(x[..., 0], x[..., 1]) if x.shape[-1] == 2 else x[..., 0].to(complex_dtype)


def _pairs(z: torch.Tensor, dtype) -> torch.Tensor:
    return torch.stack([z.real, z.imag], dim=-1).to(dtype)


def _dft_shape(op: ops.DFT, shape) -> tuple[int, ...]:
    out = list(shape)
    axis = op.axis % len(shape)
    if op.inverse and op.onesided:
        out[axis], out[-1] = op.length, 1
    else:
        out[axis], out[-1] = (op.length // 2 + 1 if op.onesided else op.length), 2
    return tuple(out)


@kernel(ops.DFT)
def dft(op: ops.DFT, inputs):
    x = inputs[0]
    if x.device.type == "meta":
        return [torch.empty(_dft_shape(op, x.shape), dtype=x.dtype, device="meta")]
    axis = op.axis % x.dim()
    z = _complex(x)
    if op.inverse and op.onesided:  # one-sided spectrum -> real signal
        return [torch.fft.irfft(z, n=op.length, dim=axis).unsqueeze(-1).to(x.dtype)]
    if op.inverse:
        return [_pairs(torch.fft.ifft(z, n=op.length, dim=axis), x.dtype)]
    result = torch.fft.fft(z, n=op.length, dim=axis)
    if op.onesided:
        result = result.narrow(axis, 0, op.length // 2 + 1)
    return [_pairs(result, x.dtype)]


@kernel(ops.STFT)
def stft(op: ops.STFT, inputs):
    signal, window = (list(inputs) + [None])[:2]
    frames = 1 + (signal.shape[1] - op.frame_length) // op.frame_step
    bins = op.frame_length // 2 + 1 if op.onesided else op.frame_length
    if signal.device.type == "meta":
        return [torch.empty((signal.shape[0], frames, bins, 2), dtype=signal.dtype, device="meta")]
    z = _complex(signal)  # [B, L]
    windows = z.unfold(1, op.frame_length, op.frame_step)[:, :frames]  # [B, frames, frame_length]
    if window is not None:
        windows = windows * window.to(windows.real.dtype)
    spectrum = torch.fft.fft(windows, dim=-1)[..., :bins]
    return [_pairs(spectrum, signal.dtype)]
