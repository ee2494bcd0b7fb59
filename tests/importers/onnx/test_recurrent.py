"""LSTM, GRU and RNN against onnxruntime: every direction, per-sequence lengths, initial states."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

SEQUENCE, BATCH, INPUT, HIDDEN = 5, 3, 4, 7


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell, gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_recurrent_matches_onnxruntime(cell, gates, direction):
    rng = np.random.default_rng(0)
    directions = 2 if direction == "bidirectional" else 1
    values = {"W": rng.standard_normal((directions, gates * HIDDEN, INPUT)),
              "R": rng.standard_normal((directions, gates * HIDDEN, HIDDEN)),
              "B": rng.standard_normal((directions, 2 * gates * HIDDEN)),
              "h0": rng.standard_normal((directions, BATCH, HIDDEN))}
    names, outputs = ["X", "W", "R", "B", "lengths", "h0"], ["Y", "Y_h"]
    if cell == "LSTM":
        values["c0"] = rng.standard_normal((directions, BATCH, HIDDEN))
        names.append("c0")
        outputs.append("Y_c")
    initializers = [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in values.items()]
    initializers.append(onnx.numpy_helper.from_array(np.array([5, 3, 1], np.int32), "lengths"))
    node = helper.make_node(cell, names, outputs, hidden_size=HIDDEN, direction=direction)
    graph = helper.make_graph([node], "rnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                             [SEQUENCE, BATCH, INPUT])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    x = rng.standard_normal((SEQUENCE, BATCH, INPUT)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    engine = tk.Runtime().deserialize(tk.Builder().build(parse_onnx(model)).serialize())
    produced = engine.create_execution_context().execute({"X": x})
    for name, reference in zip(outputs, expected):
        np.testing.assert_allclose(produced[name], reference, rtol=1e-5, atol=1e-5)
