"""LSTM, GRU and RNN with ONNX semantics: gate orders iofc (LSTM) and zrh (GRU), configurable activations,
clipping, peepholes, per-sequence lengths, both directions, layout 0 and 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import ops
from ..registry import kernel

_DEFAULT_ACTIVATIONS = {"lstm": ("Sigmoid", "Tanh", "Tanh"), "gru": ("Sigmoid", "Tanh"), "rnn": ("Tanh",)}


def _activation(name: str, alpha: float | None, beta: float | None):
    table = {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
        "affine": lambda x: (alpha if alpha is not None else 1.0) * x + (beta or 0.0),
        "leakyrelu": lambda x: F.leaky_relu(x, alpha if alpha is not None else 0.01),
        "thresholdedrelu": lambda x: torch.where(x > (alpha if alpha is not None else 1.0), x, 0.0),
        "scaledtanh": lambda x: (alpha if alpha is not None else 1.0) * torch.tanh((beta if beta is not None else 1.0) * x),
        "hardsigmoid": lambda x: torch.clamp((alpha if alpha is not None else 0.2) * x + (beta if beta is not None else 0.5), 0, 1),
        "elu": lambda x: F.elu(x, alpha if alpha is not None else 1.0),
        "softsign": F.softsign, "softplus": F.softplus,
    }
    return table[name.lower()]


def _activations(op: ops.Recurrent, directions: int):
    names = op.activations or _DEFAULT_ACTIVATIONS[op.cell] * directions
    per = len(names) // directions
    result = []
    for d in range(directions):
        fns = []
        for i in range(per):
            k = d * per + i
            alpha = op.activation_alpha[k] if k < len(op.activation_alpha) else None
            beta = op.activation_beta[k] if k < len(op.activation_beta) else None
            fns.append(_activation(names[k], alpha, beta))
        result.append(fns)
    return result


def _clip(x, op):
    return torch.clamp(x, -op.clip, op.clip) if op.clip > 0 else x


def _lstm_step(op, fns, x_t, h, c, w, r, b, p):
    f_act, g_act, h_act = fns
    gates = _clip(x_t @ w.T + h @ r.T + b, op)
    i, o, f, cell = gates.chunk(4, dim=-1)
    p_i, p_o, p_f = p.chunk(3) if p is not None else (0, 0, 0)
    i = f_act(i + p_i * c)
    f = 1 - i if op.input_forget else f_act(f + p_f * c)
    c_new = f * c + i * g_act(cell)
    o = f_act(o + p_o * c_new)
    return o * h_act(c_new), c_new


def _gru_step(op, fns, x_t, h, w, r, b):
    f_act, g_act = fns
    hidden = op.hidden_size
    w_b, r_b = b[:3 * hidden], b[3 * hidden:]
    x_z, x_r, x_h = (x_t @ w.T + w_b).chunk(3, dim=-1)
    r_z, r_r, r_h = r.chunk(3, dim=0)
    rb_z, rb_r, rb_h = r_b.chunk(3)
    z = f_act(_clip(x_z + h @ r_z.T + rb_z, op))
    reset = f_act(_clip(x_r + h @ r_r.T + rb_r, op))
    if op.linear_before_reset:
        candidate = g_act(_clip(x_h + reset * (h @ r_h.T + rb_h), op))
    else:
        candidate = g_act(_clip(x_h + (reset * h) @ r_h.T + rb_h, op))
    return (1 - z) * candidate + z * h


def _rnn_step(op, fns, x_t, h, w, r, b):
    hidden = op.hidden_size
    return fns[0](_clip(x_t @ w.T + h @ r.T + b[:hidden] + b[hidden:], op))


def _run_direction(op, fns, x, w, r, b, lengths, h, c, p, reverse):
    steps, batch = x.shape[0], x.shape[1]
    outputs = torch.zeros(steps, batch, op.hidden_size, dtype=x.dtype, device=x.device)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        # a reversed sequence starts at its own last valid step; positions past a sequence's end stay 0
        if reverse:
            source = (lengths - 1 - (steps - 1 - t)).clamp(min=0)
            x_t = x[source, torch.arange(batch)]
        else:
            x_t = x[t]
        active = (torch.as_tensor(t if not reverse else steps - 1 - t) < lengths).unsqueeze(-1)
        if op.cell == "lstm":
            h_new, c_new = _lstm_step(op, fns, x_t, h, c, w, r, b, p)
            c = torch.where(active, c_new, c)
        elif op.cell == "gru":
            h_new = _gru_step(op, fns, x_t, h, w, r, b)
        else:
            h_new = _rnn_step(op, fns, x_t, h, w, r, b)
        h = torch.where(active, h_new, h)
        out_index = t
        if reverse:  # write each output at its own sequence's position
            out_index = (lengths - 1 - (steps - 1 - t)).clamp(min=0)
            outputs[out_index, torch.arange(batch)] = torch.where(active, h_new, outputs[out_index, torch.arange(batch)])
        else:
            outputs[out_index] = torch.where(active, h_new, torch.zeros_like(h_new))
    return outputs, h, c


@kernel(ops.Recurrent)
def recurrent(op: ops.Recurrent, inputs):
    x, w, r, b, lengths, h0, c0, p = (list(inputs) + [None] * 8)[:8]
    if op.layout == 1:
        x = x.transpose(0, 1)
    steps, batch = x.shape[0], x.shape[1]
    directions = 2 if op.direction == "bidirectional" else 1
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[op.cell]
    hidden = op.hidden_size
    if b is None:
        b = torch.zeros(directions, 2 * gates * hidden, dtype=x.dtype, device=x.device)
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long, device=x.device)
    lengths = lengths.long()
    if h0 is None:
        h0 = torch.zeros(directions, batch, hidden, dtype=x.dtype, device=x.device)
    elif op.layout == 1:
        h0 = h0.transpose(0, 1)
    if c0 is None:
        c0 = torch.zeros(directions, batch, hidden, dtype=x.dtype, device=x.device)
    elif op.layout == 1:
        c0 = c0.transpose(0, 1)
    fns = _activations(op, directions)
    ys, hs, cs = [], [], []
    for d in range(directions):
        bias = b[d] if op.cell == "gru" else b[d]
        if op.cell == "lstm":
            bias = b[d][:4 * hidden] + b[d][4 * hidden:]
        reverse = op.direction == "reverse" or d == 1
        y, h, c = _run_direction(op, fns[d], x, w[d], r[d], bias, lengths, h0[d], c0[d],
                                 None if p is None else p[d], reverse)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y = torch.stack(ys, 1)  # [seq, directions, batch, hidden]
    y_h, y_c = torch.stack(hs), torch.stack(cs)
    if op.layout == 1:
        y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    outputs = [y, y_h]
    if op.cell == "lstm":
        outputs.append(y_c)
    return outputs
