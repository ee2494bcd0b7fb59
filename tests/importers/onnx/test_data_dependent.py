"""Outputs sized at run time (NonZero, NonMaxSuppression, Unique) and the layers after them."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx


def _compare(model, feed):
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    engine = tk.Runtime().deserialize(tk.Builder().build(parse_onnx(model)).serialize())
    produced = engine.create_execution_context().execute(feed)
    for output, reference in zip(model.graph.output, expected):
        np.testing.assert_allclose(produced[output.name], reference, rtol=1e-6)
    return engine


def test_nonzero_then_transpose_gather_and_reduce():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["coords"], perm=[1, 0]),
             helper.make_node("Gather", ["coords"], ["rows"], axis=1, **{}),
             helper.make_node("Cast", ["nz"], ["nz_float"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["nz_float"], ["total"], keepdims=0)]
    nodes[2].input.append("one")
    graph = helper.make_graph(nodes, "nz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 7])],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               [("rows", TensorProto.INT64), ("total", TensorProto.FLOAT)]],
                              [onnx.numpy_helper.from_array(np.array(1, np.int64), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    x[x < 0.3] = 0
    engine = _compare(model, {"x": x})
    assert engine.plan.outputs[0].shape == (-1,)  # sized at run time
    x[:] = 0
    x[1, 2] = 5.0
    assert engine.create_execution_context().execute({"x": x})["rows"].tolist() == [2]


def test_non_max_suppression_with_ties_and_limits():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11], [0, 10.1, 1, 11.1],
                       [0, 100, 1, 101]]], np.float32)
    scores = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3], [0.5, 0.5, 0.5, 0.5, 0.5, 0.1]]], np.float32)
    initializers = [onnx.numpy_helper.from_array(np.array([2], np.int64), "max"),
                    onnx.numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
                    onnx.numpy_helper.from_array(np.array([0.2], np.float32), "score")]
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "score"], ["selected"])
    graph = helper.make_graph([node], "nms", [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4]),
                                              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 6])],
                              [helper.make_tensor_value_info("selected", TensorProto.INT64, None)], initializers)
    _compare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), {"boxes": boxes, "scores": scores})


def test_unique_unsorted_with_all_outputs():
    node = helper.make_node("Unique", ["x"], ["y", "indices", "inverse", "counts"], sorted=0)
    graph = helper.make_graph([node], "unique", [helper.make_tensor_value_info("x", TensorProto.INT64, [9])],
                              [helper.make_tensor_value_info(n, TensorProto.INT64, None)
                               for n in ["y", "indices", "inverse", "counts"]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    _compare(model, {"x": np.array([3, 1, 3, 7, 1, 1, 9, 0, 7], np.int64)})
