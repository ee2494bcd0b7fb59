"""If, Loop and Scan against onnxruntime, on small models whose subgraphs read outer-scope values: If with a
run-time condition (both branches run, a select picks) and a build-time one; Loop with carried values,
scan outputs and an early exit; Scan with a reversed direction and a non-zero scan axis."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_case import assert_close, rand, run_onnxruntime, run_tensorkiln

FLOAT = TensorProto.FLOAT


def _value(name, elem=FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _compare(nodes, inputs, outputs, feed, initializers=(), opset=16):
    graph = helper.make_graph(nodes, "control_flow", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for index, (got, want) in enumerate(zip(run_tensorkiln(model, feed), run_onnxruntime(model, feed))):
        assert_close(got, want, f"{nodes[-1].op_type} model, output {index}")


def _branches():
    then_graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["then_out"])], "then", [],
                                   [_value("then_out", shape=[3, 7])])
    else_graph = helper.make_graph([helper.make_node("Mul", ["x", "y"], ["else_out"])], "else", [],
                                   [_value("else_out", shape=[3, 7])])
    return then_graph, else_graph


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_a_run_time_condition(flag):
    then_graph, else_graph = _branches()
    node = helper.make_node("If", ["cond"], ["out"], then_branch=then_graph, else_branch=else_graph)
    feed = {"cond": np.array(flag), "x": rand(3, 7), "y": rand(3, 7, seed=1)}
    _compare([node], [_value("cond", TensorProto.BOOL, []), _value("x", shape=[3, 7]), _value("y", shape=[3, 7])],
             [_value("out")], feed)


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_a_build_time_condition(flag):
    then_graph, else_graph = _branches()
    nodes = [helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array([flag]))),
             helper.make_node("If", ["cond"], ["out"], then_branch=then_graph, else_branch=else_graph)]
    feed = {"x": rand(3, 7), "y": rand(3, 7, seed=1)}
    _compare(nodes, [_value("x", shape=[3, 7]), _value("y", shape=[3, 7])], [_value("out")], feed)


@pytest.mark.parametrize("trips, stop_after", [(5, None), (1, None), (6, 3)])
def test_loop_with_carried_values_and_scan_outputs(trips, stop_after):
    # body: acc = acc * 0.5 + x; emit acc + i; keep going while i + 1 < stop_after
    body_nodes = [helper.make_node("Mul", ["acc_in", "half"], ["scaled"]),
                  helper.make_node("Add", ["scaled", "x"], ["acc_out"]),
                  helper.make_node("Cast", ["i"], ["i_float"], to=FLOAT),
                  helper.make_node("Add", ["acc_out", "i_float"], ["emitted"]),
                  helper.make_node("Add", ["i", "one"], ["next_i"]),
                  helper.make_node("Less", ["next_i", "stop"], ["cond_out"])]
    body = helper.make_graph(body_nodes, "body",
                             [_value("i", TensorProto.INT64, []), _value("cond_in", TensorProto.BOOL, []),
                              _value("acc_in", shape=[2, 5])],
                             [_value("cond_out", TensorProto.BOOL, []), _value("acc_out", shape=[2, 5]),
                              _value("emitted", shape=[2, 5])])
    initializers = [numpy_helper.from_array(np.array(trips, np.int64), "trips"),
                    numpy_helper.from_array(np.array(True), "cond"),
                    numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                    numpy_helper.from_array(np.array(1, np.int64), "one"),
                    numpy_helper.from_array(np.array(stop_after or 1000, np.int64), "stop")]
    node = helper.make_node("Loop", ["trips", "cond", "acc0"], ["acc_final", "emitted_all"], body=body)
    feed = {"acc0": rand(2, 5), "x": rand(2, 5, seed=1)}
    _compare([node], [_value("acc0", shape=[2, 5]), _value("x", shape=[2, 5])],
             [_value("acc_final"), _value("emitted_all")], feed, initializers)


@pytest.mark.parametrize("reverse, axis", [(0, 0), (1, 0), (0, 1)])
def test_scan_running_sum(reverse, axis):
    # state = state + row; emit state * 2
    body_nodes = [helper.make_node("Add", ["state_in", "row"], ["state_out"]),
                  helper.make_node("Add", ["state_out", "state_out"], ["emitted"])]
    body = helper.make_graph(body_nodes, "body", [_value("state_in", shape=[3]), _value("row", shape=[3])],
                             [_value("state_out", shape=[3]), _value("emitted", shape=[3])])
    node = helper.make_node("Scan", ["state0", "rows"], ["state_final", "emitted_all"], body=body,
                            num_scan_inputs=1, scan_input_directions=[reverse], scan_input_axes=[axis])
    rows = rand(7, 3) if axis == 0 else rand(3, 7)
    _compare([node], [_value("state0", shape=[3]), _value("rows", shape=list(rows.shape))],
             [_value("state_final"), _value("emitted_all")], {"state0": rand(3, seed=2), "rows": rows})
