"""Kernels that check run-time data on the host (Gather's index range) must not break CUDA graph capture: found
by bench/dynamic_shapes.py, where Hugging Face BERT's embedding lookup from run-time input_ids invalidated the
capture (cudaErrorStreamCaptureUnsupported). Skipped where no CUDA device is present."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.builder import BuilderConfig, Target
from tensorkiln.errors import InputError
from tensorkiln.importers.onnx import parse_onnx

pytestmark = pytest.mark.gpu


def _embedding_model() -> bytes:
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32), "table")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
             helper.make_node("GatherElements", ["rows", "pick"], ["y"], axis=2)]
    graph = helper.make_graph(nodes, "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5]),
                                                   helper.make_tensor_value_info("pick", TensorProto.INT64, [2, 5, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 3])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime builds of the GPU machines read IR versions up to 13
    return model.SerializeToString()


def test_gathers_from_run_time_indices_run_in_a_cuda_graph():
    model = _embedding_model()
    engine = tk.Builder(BuilderConfig(target=Target.CUDA)).build(parse_onnx(model))
    context = engine.create_execution_context()
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for _ in range(3):  # the capture, then replays with new indices (negative ones counted from the end)
        feed = {"ids": rng.integers(-50, 50, (2, 5)), "pick": rng.integers(-8, 8, (2, 5, 3))}
        np.testing.assert_array_equal(context.execute(feed)["y"], session.run(None, feed)[0])
    assert context._graph is not None
    fresh = engine.create_execution_context()
    with pytest.raises(InputError, match="out of range"):  # checked on the host before the capture
        fresh.execute({"ids": np.full((2, 5), 50), "pick": np.zeros((2, 5, 3), np.int64)})
