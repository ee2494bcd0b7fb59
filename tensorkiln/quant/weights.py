"""Per-channel symmetric INT8 weights: one scale per output channel, max |w| / 127 (TensorRT's weight scales)."""
from __future__ import annotations

import numpy as np

INT8_MAX = 127


def per_channel_scales(weights: np.ndarray, axis: int) -> np.ndarray:
    """max |w| / 127 over everything but `axis`; a channel of zeros gets scale 1 (its weights stay zeros)."""
    moved = np.moveaxis(np.abs(weights.astype(np.float32)), axis, 0).reshape(weights.shape[axis], -1)
    amax = moved.max(axis=1) if moved.size else np.zeros(weights.shape[axis], np.float32)
    return np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)


def quantize_weights(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scales per channel along `axis`)."""
    scales = per_channel_scales(weights, axis)
    shape = [1] * weights.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weights.astype(np.float32) / scales.reshape(shape)), -INT8_MAX, INT8_MAX)
    return q.astype(np.int8), scales


def fake_quantize_weights(weights: np.ndarray, axis: int) -> np.ndarray:
    """The weights an INT8 kernel computes with, as float: dequantize(quantize(w)), in w's dtype."""
    q, scales = quantize_weights(weights, axis)
    shape = [1] * weights.ndim
    shape[axis] = -1
    return (q.astype(np.float32) * scales.reshape(shape)).astype(weights.dtype)
