"""A bound LSTM: PyTorch's LSTM cell (one C++ call per time step) instead of the kernel's dozen ops per step.
(torch.lstm, the whole sequence in one call, goes through oneDNN's RNN on the CPU: 77 us for Silero's one step
against 21 us for the cell.)

Serves the ONNX LSTM in its common form: forward or bidirectional, layout 0, the default activations (sigmoid, tanh,
tanh), no clipping, no peepholes, no coupled input-forget gate, no sequence lengths, constant weights. The weights
are reordered once from ONNX's gate order (input, output, forget, cell) to PyTorch's (input, forget, cell, output).
Everything else runs the kernel (kernels/cpu/recurrent.py). Silero VAD's decoder LSTM: 80 us -> about 20 us.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...ir import ops
from .bound import BoundInput, binder
from .recurrent import _DEFAULT_ACTIVATIONS

_ONNX_TO_TORCH_GATES = (0, 2, 3, 1)  # torch's i, f, g, o taken from ONNX's i, o, f, c blocks


def _torch_gates(weight: torch.Tensor, hidden: int) -> torch.Tensor:
    blocks = weight.split(hidden, dim=0)
    return torch.cat([blocks[i] for i in _ONNX_TO_TORCH_GATES]).contiguous()


def _default_form(op: ops.Recurrent, directions: int) -> bool:
    activations = tuple(name.lower() for name in op.activations)
    defaults = tuple(name.lower() for name in _DEFAULT_ACTIVATIONS["lstm"] * directions)
    return (op.cell == "lstm" and op.direction in ("forward", "bidirectional") and op.layout == 0 and op.clip <= 0
            and not op.input_forget and activations in ((), defaults) and not op.activation_alpha
            and not op.activation_beta)


@binder(ops.Recurrent)
def bind_lstm(op: ops.Recurrent, inputs: Sequence[BoundInput | None], outputs: Sequence[BoundInput]):
    x, w, r, b, lengths, h0, c0, p = (list(inputs) + [None] * 8)[:8]
    directions = 2 if op.direction == "bidirectional" else 1
    if (not _default_form(op, directions) or lengths is not None or p is not None or x is None
            or len(x.shape) != 3 or min(x.shape) < 0 or x.dtype is not torch.float32
            or any(t is None or t.value is None for t in (w, r)) or (b is not None and b.value is None)):
        return None
    hidden, batch, steps = op.hidden_size, x.shape[1], x.shape[0]
    weights = []
    for d in range(directions):
        bias = torch.zeros(8 * hidden) if b is None else b.value[d]
        weights.append((_torch_gates(w.value[d], hidden), _torch_gates(r.value[d], hidden),
                        _torch_gates(bias[:4 * hidden], hidden), _torch_gates(bias[4 * hidden:], hidden)))
    zeros = torch.zeros(directions, batch, hidden)
    orders = [range(steps), range(steps - 1, -1, -1)][:directions]
    cell = torch.lstm_cell

    def call(args: list) -> list[torch.Tensor]:
        x_seq, h0, c0 = args[0], args[5] if len(args) > 5 else None, args[6] if len(args) > 6 else None
        h0 = zeros if h0 is None else h0
        c0 = zeros if c0 is None else c0
        ys, hs, cs = [], [], []
        for d, order in enumerate(orders):
            h, c = h0[d], c0[d]
            y = [None] * steps
            for t in order:
                h, c = cell(x_seq[t], (h, c), *weights[d])
                y[t] = h
            ys.append(torch.stack(y))
            hs.append(h)
            cs.append(c)
        return [torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)]

    return call
