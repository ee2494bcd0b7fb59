"""DFT, STFT, HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix.

The window and mel-matrix operators take only sizes and frequencies, which an engine needs at build time
anyway (they fix output shapes): they become constants."""
from __future__ import annotations

import numpy as np
import onnx

from ....ir import ops
from ..registry import converter
from ..types import onnx_to_datatype


def _output_dtype(ctx, node):
    return onnx_to_datatype(ctx.attr(node, "output_datatype", onnx.TensorProto.FLOAT), node.op_type).numpy


@converter("DFT")
def dft(ctx, node):
    x = ctx.input(node, 0)
    if ctx.opset < 20:
        axis = int(ctx.attr(node, "axis", 1))
    else:
        axis = ctx.ints(node, 2, "axis")[0] if ctx.input(node, 2) is not None else -2
    axis %= len(x.shape)
    if axis == len(x.shape) - 1:
        raise ctx.error(node, "axis names the trailing (real, imaginary) dim; it must name a signal dim")
    inverse, onesided = bool(ctx.attr(node, "inverse", 0)), bool(ctx.attr(node, "onesided", 0))
    if ctx.input(node, 1) is not None:
        length = ctx.ints(node, 1, "dft_length")[0]
    else:
        length = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    op = ops.DFT(axis, length, inverse, onesided)
    return ctx.network.add_layer(op, [x], ctx.name(node)).outputs


@converter("STFT")
def stft(ctx, node):
    signal, window = ctx.input(node, 0), ctx.input(node, 2)
    step = ctx.ints(node, 1, "frame_step")[0]
    if ctx.input(node, 3) is not None:
        length = ctx.ints(node, 3, "frame_length")[0]
    else:
        length = window.shape[0] if window is not None else signal.shape[1]
    op = ops.STFT(step, length, bool(ctx.attr(node, "onesided", 1)))
    return ctx.network.add_layer(op, [signal, window], ctx.name(node)).outputs


def _window_positions(ctx, node):
    size = ctx.ints(node, 0, "size")[0]
    periodic = ctx.attr(node, "periodic", 1)
    if size < 0:  # np.arange would quietly make an empty window; onnxruntime refuses it
        raise ctx.shape_error(node, f"window size {size} must not be negative")
    _check_size(ctx, node, (size,))
    return np.arange(size, dtype=np.float64), (size if periodic else size - 1)


_WINDOWS = {
    "HannWindow": lambda n, length: np.sin(np.pi * n / length) ** 2,
    "HammingWindow": lambda n, length: 25 / 46 - (21 / 46) * np.cos(2 * np.pi * n / length),
    "BlackmanWindow": lambda n, length: (0.42 - 0.5 * np.cos(2 * np.pi * n / length)
                                         + 0.08 * np.cos(4 * np.pi * n / length)),
}


@converter(*_WINDOWS)
def window(ctx, node):
    n, length = _window_positions(ctx, node)
    value = _WINDOWS[node.op_type](n, length).astype(_output_dtype(ctx, node))
    return [ctx.network.add_constant(None, value, name=node.output[0]).get_output(0)]


def _mel_edges(bins: int, dft_length: int, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """The filters' edges as frequency bins (float; floored), mel-spaced from low_hz to high_hz."""
    with np.errstate(all="ignore"):  # hostile edges become inf or nan here and are refused by the caller
        low_mel, high_mel = (2595 * np.log10(1 + hz / 700) for hz in (low_hz, high_hz))
        mels = np.arange(bins + 2) * ((high_mel - low_mel) / (bins + 2)) + low_mel
        return ((dft_length + 1) * (700 * (10 ** (mels / 2595) - 1))) // rate


def _mel_matrix(edges: np.ndarray, dft_length: int, bins: int) -> np.ndarray:
    """Triangular filters between `edges` (in range), as ONNX defines them (integer frequency bins)."""
    edges = edges.astype(int)
    out = np.zeros((dft_length // 2 + 1, bins))
    for i in range(bins):
        left, center, right = edges[i:i + 3]
        if center == left:
            out[center, i] = 1
        else:
            out[left:center + 1, i] = (np.arange(left, center + 1) - left) / (center - left)
        if right > center:
            out[center:right, i] = (right - np.arange(center, right)) / (right - center)
    return out


def _check_size(ctx, node, dims) -> None:
    """A constant computed here (in float64) within the memory budget, before numpy allocates it."""
    ctx.network.check_constant(f"output {node.output[0]!r} of ONNX node {ctx.name(node)!r} ({node.op_type})",
                               [max(int(d), 0) for d in dims], np.float64)


@converter("MelWeightMatrix")
def mel_weight_matrix(ctx, node):
    bins, dft_length, rate = (ctx.ints(node, i, what)[0] for i, what in
                              enumerate(("num_mel_bins", "dft_length", "sample_rate")))
    low, high = (float(ctx.require_constant(node, i, what).reshape(-1)[0]) for i, what in
                 ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")))
    if bins < 0 or dft_length < 0 or rate <= 0:
        raise ctx.shape_error(node, f"num_mel_bins {bins} and dft_length {dft_length} must be >= 0 and sample_rate "
                                    f"{rate} > 0")
    _check_size(ctx, node, (dft_length // 2 + 1, bins))
    edges = _mel_edges(bins, dft_length, rate, low, high)
    if not (np.isfinite(edges).all() and edges.min() >= 0 and edges.max() < dft_length // 2 + 1):
        # as onnxruntime refuses it: a filter edge outside the dft_length // 2 + 1 frequency bins
        raise ctx.shape_error(node, f"lower_edge_hertz {low} and upper_edge_hertz {high} put mel filter edges "
                                    f"outside the {dft_length // 2 + 1} frequency bins of dft_length {dft_length} "
                                    f"at sample_rate {rate}; they must lie in [0, sample_rate / 2]")
    value = _mel_matrix(edges, dft_length, bins).astype(_output_dtype(ctx, node))
    return [ctx.network.add_constant(None, value, name=node.output[0]).get_output(0)]
