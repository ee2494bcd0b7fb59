"""Regression tests of fuzzer findings fixed outside the importers, plan and limits (kernels, runtime): each builds
the finding's smallest form directly, so it does not depend on the fuzzer's mutators staying the same."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

from tensorkiln.builder import Builder
from tensorkiln.errors import InputError
from tensorkiln.importers.onnx import parse_onnx


def _gather_model(axis: int) -> bytes:
    node = helper.make_node("Gather", ["data", "indices"], ["y"], axis=axis)
    graph = helper.make_graph([node], "gather", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 6]),
                                                 helper.make_tensor_value_info("indices", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("indices", [[0, 5, -6], [-1, 2, 3], [1, 1, 1]])
def test_gather_in_range_matches_onnxruntime(indices):
    model = _gather_model(axis=1)
    data = np.arange(12, dtype=np.float32).reshape(2, 6)
    feed = {"data": data, "indices": np.array(indices, np.int64)}
    outputs = Builder().build(parse_onnx(model)).create_execution_context().execute(feed)
    [expected] = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_array_equal(np.asarray(outputs["y"]), expected)


@pytest.mark.parametrize("bad", [6, -7, 2**63 - 1, -2**63])
def test_gather_out_of_range_is_a_clean_error(bad):
    """Found by the ONNX fuzzer: indices past the axis were an IndexError or a RuntimeError from torch."""
    model = _gather_model(axis=1)
    feed = {"data": np.zeros((2, 6), np.float32), "indices": np.array([0, bad, 1], np.int64)}
    with pytest.raises(Exception):  # onnxruntime refuses these indices too
        onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    context = Builder().build(parse_onnx(model)).create_execution_context()
    with pytest.raises(InputError, match=f"Gather: index {bad} is out of range for an axis of size 6"):
        context.execute(feed)


def test_layer_norm_of_a_0d_input_is_a_clean_error():
    """Found by the ONNX fuzzer (an input's shape cleared): the kernel's `axis % x.dim()` raised ZeroDivisionError
    during shape inference, which caught only RuntimeError, ValueError, IndexError and TypeError."""
    from tensorkiln.errors import TensorkilnError

    node = helper.make_node("LayerNormalization", ["x", "gamma"], ["y"], axis=-1)
    graph = helper.make_graph([node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("gamma", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(TensorkilnError, match="LayerNormalization|layer_norm|cannot take inputs"):
        parse_onnx(model.SerializeToString())


def test_a_bfloat16_output_is_returned_to_numpy_callers_as_float32(fuzz_bundle):
    """Found by the engine fuzzer (a plan re-sealed with precision bf16 and a bfloat16 output, which validation
    accepts): execute() with numpy inputs raised torch's "Got unsupported ScalarType BFloat16" (numpy has no
    bfloat16). The output now comes back widened to float32, exactly; torch callers still get bfloat16."""
    import torch

    from tensorkiln.fuzz.json_mutator import dumps
    from tensorkiln.fuzz.targets.engine import plan_of, reseal
    from tensorkiln.runtime import Runtime

    blob = fuzz_bundle.engines["transformer"]
    plan = plan_of(blob)
    plan["precision"] = "bf16"
    [output] = plan["outputs"]
    output["dtype"] = "bfloat16"
    engine = Runtime().deserialize(reseal(blob, dumps(plan)))
    x = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)
    as_numpy = engine.create_execution_context().execute({"x": x})["y"]
    as_torch = engine.create_execution_context().execute({"x": torch.from_numpy(x)})["y"]
    assert as_numpy.dtype == np.float32 and as_torch.dtype == torch.bfloat16
    np.testing.assert_array_equal(as_numpy, as_torch.float().numpy())


# ---- found by the hour-long campaign of 2026-12-02 ------------------------------------------------------------------
def _model(nodes, inputs, initializers=()) -> bytes:
    graph = helper.make_graph(nodes, "regression",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_string_attribute_that_is_not_utf8_is_a_clean_error():
    """Was a UnicodeDecodeError traceback (a Conv whose auto_pad held b'VALIDS\\xc9...')."""
    from tensorkiln.errors import ModelFormatError

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 1, 1], [1.0, 2.0])
    conv = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=b"VALIDS\xc9\xe4")
    with pytest.raises(ModelFormatError, match="auto_pad.*not UTF-8"):
        parse_onnx(_model([conv], {"x": [1, 1, 4, 4]}, [weight]))


def test_the_builder_refuses_what_its_loader_would_refuse():
    """Was a 'reload' mismatch: a max pooling with pads of 10^6 built an engine (its output fits), and loading that
    engine refused its padded input of terabytes. The builder now validates the plan as the loader does."""
    from tensorkiln.errors import BuildError

    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1], strides=[1000000, 1000000],
                            pads=[1000000, 1000000, 1000000, 1000000])
    network = parse_onnx(_model([pool], {"x": [1, 64, 100, 100]}))
    with pytest.raises(BuildError, match="cannot become an engine: .*padded input"):
        Builder().build(network)



def _finding_model(nodes, inputs, initializers=(), opset=17) -> bytes:
    graph = helper.make_graph(nodes, "finding", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("bad", [[0, 2], [-3, 0], [1, 9]])
def test_gather_nd_out_of_range_is_a_clean_error(bad):
    """Found by the hour-long ONNX campaign (traceback-1f49e4b872): GatherND's out-of-range index was torch's
    IndexError at execute; GatherElements, ScatterElements and ScatterND shared the unchecked index helper."""
    model = _finding_model([helper.make_node("GatherND", ["data", "indices"], ["y"])],
                   [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 2]),
                    helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 2])])
    feed = {"data": np.arange(4, dtype=np.float32).reshape(2, 2), "indices": np.array([bad], np.int64)}
    with pytest.raises(Exception):  # onnxruntime refuses these indices too
        onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    context = Builder().build(parse_onnx(model)).create_execution_context()
    with pytest.raises(InputError, match=r"GatherND: index -?\d+ is out of range for an axis of size 2"):
        context.execute(feed)
    feed["indices"] = np.array([[1, -1]], np.int64)  # in range: still the right value
    [expected] = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_array_equal(np.asarray(context.execute(feed)["y"]), expected)


def test_gather_elements_out_of_range_is_a_clean_error():
    model = _finding_model([helper.make_node("GatherElements", ["data", "indices"], ["y"], axis=1)],
                   [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 2]),
                    helper.make_tensor_value_info("indices", TensorProto.INT64, [2, 1])])
    context = Builder().build(parse_onnx(model)).create_execution_context()
    with pytest.raises(InputError, match="GatherElements: index 5 is out of range for an axis of size 2"):
        context.execute({"data": np.zeros((2, 2), np.float32), "indices": np.array([[0], [5]], np.int64)})


@pytest.mark.parametrize("start, limit, delta, length", [(1e30, 1e10, 1.0, 0), (0.0, 5.0, 1.5, 4)])
def test_range_that_numpy_cannot_size_is_empty_or_right(start, limit, delta, length):
    """Found by the hour-long ONNX campaign (traceback-49f81c5504): Range(1e30, 1e10, 1) in float32 is empty by
    the spec, but np.arange raised ValueError "Maximum allowed size exceeded" before any budget check."""
    from onnx import numpy_helper
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in
              ((start, "start"), (limit, "limit"), (delta, "delta"))]
    model = _finding_model([helper.make_node("Range", ["start", "limit", "delta"], ["y"])], [], consts)
    [expected] = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {})
    assert expected.shape == (length,)
    outputs = Builder().build(parse_onnx(model)).create_execution_context().execute({})
    np.testing.assert_array_equal(np.asarray(outputs["y"]), expected)


def test_range_past_the_budget_is_a_resource_limit_error():
    from onnx import numpy_helper

    from tensorkiln.errors import ResourceLimitError
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in
              ((0.0, "start"), (1e30, "limit"), (1.0, "delta"))]
    model = _finding_model([helper.make_node("Range", ["start", "limit", "delta"], ["y"])], [], consts)
    with pytest.raises(ResourceLimitError, match="memory budget"):
        parse_onnx(model)


@pytest.mark.parametrize("op_type", ["Min", "Max", "Sum", "Mean", "Concat"])
def test_an_empty_variadic_input_is_a_conversion_error(op_type):
    """Found by the hour-long ONNX campaign (traceback-6962b2cf8e): Min with inputs [''] was an IndexError in the
    converter (no operands once the empty name was dropped)."""
    from tensorkiln.importers.onnx.context import ConversionError
    attrs = {"axis": 0} if op_type == "Concat" else {}
    for names in ([""], ["x", ""]):
        model = _finding_model([helper.make_node(op_type, names, ["y"], **attrs)],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])])
        with pytest.raises(ConversionError, match=f"input {len(names) - 1} .* is empty; each input of {op_type}"):
            parse_onnx(model)


def test_an_attribute_of_a_later_opset_is_a_conversion_error():
    """Found by the hour-long ONNX campaign (traceback-ecde022fe8): MaxPool at opset 7 with dilations = 'x' (a
    string; MaxPool has dilations only from opset 10, so the schema's type check did not see it) was a ValueError
    in the converter. onnxruntime refuses the unknown attribute too."""
    from tensorkiln.importers.onnx.context import ConversionError
    for dilations in ("x", [2, 2]):
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=dilations)
        model = _finding_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])], opset=7)
        with pytest.raises(Exception):
            onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        with pytest.raises(ConversionError, match="has attribute 'dilations', which MaxPool does not have"):
            parse_onnx(model)


def test_a_caffe_blob_with_negative_legacy_dims_is_a_model_format_error():
    """Found by the hour-long Caffe campaign (traceback-f368a3f54e): a legacy blob shape (1, -1, -1, 32) was
    numpy's ValueError "can only specify one unknown dimension"; one -1 would have been silently inferred."""
    from tensorkiln.errors import ModelFormatError
    from tensorkiln.importers.caffe.caffemodel import blob_to_array
    from tensorkiln.importers.caffe.schema import caffe_pb2

    for dims in ((1, -1, -1, 32), (1, -1, 2, 2)):
        blob = caffe_pb2.BlobProto(num=dims[0], channels=dims[1], height=dims[2], width=dims[3], data=[0.0] * 4)
        with pytest.raises(ModelFormatError, match="negative dimension"):
            blob_to_array(blob)
    shaped = caffe_pb2.BlobProto(data=[0.0] * 4)
    shaped.shape.dim.extend([-2, -2])
    with pytest.raises(ModelFormatError, match="negative dimension"):
        blob_to_array(shaped)


@pytest.mark.parametrize("bins, dft_length, rate, low, high", [
    (8, 16, 0, 0.0, 4000.0), (-3, 16, 8000, 0.0, 4000.0), (8, -16, 8000, 0.0, 4000.0),
    (8, 16, 8000, float("nan"), 4000.0), (8, 16, 8000, 0.0, 1e30), (8, 16, 8000, -100.0, 4000.0)])
def test_mel_weight_matrix_out_of_range_is_a_shape_error(bins, dft_length, rate, low, high):
    """Found while fixing issue 18: hostile MelWeightMatrix inputs (sample rate 0, negative sizes, edges past the
    Nyquist frequency or below 0 Hz) were numpy's IndexError or ValueError; onnxruntime refuses each of them."""
    from onnx import numpy_helper

    from tensorkiln.errors import ShapeError
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in
              ((bins, "bins"), (dft_length, "dft"), (rate, "rate"))]
    consts += [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((low, "low"), (high, "high"))]
    model = _finding_model([helper.make_node("MelWeightMatrix", ["bins", "dft", "rate", "low", "high"], ["y"])],
                           [], consts)
    with pytest.raises(Exception):
        onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {})
    with pytest.raises(ShapeError, match="MelWeightMatrix"):
        parse_onnx(model)


@pytest.mark.parametrize("bins, dft_length, low, high", [(8, 16, 0.0, 4000.0), (8, 16, 4000.0, 0.0),
                                                         (0, 16, 0.0, 4000.0), (8, 0, 0.0, 4000.0)])
def test_mel_weight_matrix_in_range_matches_onnxruntime(bins, dft_length, low, high):
    from onnx import numpy_helper
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in
              ((bins, "bins"), (dft_length, "dft"), (8000, "rate"))]
    consts += [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((low, "low"), (high, "high"))]
    model = _finding_model([helper.make_node("MelWeightMatrix", ["bins", "dft", "rate", "low", "high"], ["y"])],
                           [], consts)
    [expected] = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {})
    outputs = Builder().build(parse_onnx(model)).create_execution_context().execute({})
    np.testing.assert_allclose(np.asarray(outputs["y"]), expected, atol=1e-6)


@pytest.mark.parametrize("op_type, attrs, shape", [
    ("DepthToSpace", {"blocksize": 0}, [1, 4, 2, 2]), ("DepthToSpace", {"blocksize": 2}, [1, 6, 2, 2]),
    ("DepthToSpace", {"blocksize": 2}, [4, 2, 2]), ("DepthToSpace", {"blocksize": 2, "mode": "XYZ"}, [1, 4, 2, 2]),
    ("SpaceToDepth", {"blocksize": -2}, [1, 4, 2, 2]), ("SpaceToDepth", {"blocksize": 3}, [1, 4, 2, 2])])
def test_depth_to_space_bad_blocksize_is_a_clean_error(op_type, attrs, shape):
    """Found while fixing issue 18: DepthToSpace with blocksize 0 was a ZeroDivisionError in the converter (and a
    3-d input a ValueError unpacking its shape); onnxruntime refuses each of these."""
    from tensorkiln.errors import TensorkilnError
    model = _finding_model([helper.make_node(op_type, ["x"], ["y"], **attrs)],
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)])
    with pytest.raises(Exception):
        onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
            None, {"x": np.zeros(shape, np.float32)})
    with pytest.raises(TensorkilnError, match=f"{op_type}.*(blocksize|4-d|mode)"):
        parse_onnx(model)


@pytest.mark.parametrize("op_type", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_a_negative_window_size_is_a_shape_error(op_type):
    """Found while fixing issue 18: a negative window size gave an empty window where onnxruntime refuses it."""
    from onnx import numpy_helper

    from tensorkiln.errors import ShapeError
    model = _finding_model([helper.make_node(op_type, ["size"], ["y"])], [],
                           [numpy_helper.from_array(np.array(-5, np.int64), "size")])
    with pytest.raises(Exception):
        onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {})
    with pytest.raises(ShapeError, match="window size -5 must not be negative"):
        parse_onnx(model)


@pytest.mark.parametrize("op_type, attrs", [("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1})])
def test_integer_division_by_zero_is_an_input_error(op_type, attrs):
    """Found while fixing issue 18: an int32 Div or Mod by a 0 at run time was torch's RuntimeError
    "ZeroDivisionError"; onnxruntime refuses it too. In-range divisors still match onnxruntime."""
    model = _finding_model([helper.make_node(op_type, ["a", "b"], ["y"], **attrs)],
                           [helper.make_tensor_value_info(n, TensorProto.INT32, [3]) for n in ("a", "b")])
    model_proto = __import__("onnx").load_from_string(model)
    model_proto.graph.output[0].type.tensor_type.elem_type = TensorProto.INT32
    model = model_proto.SerializeToString()
    context = Builder().build(parse_onnx(model)).create_execution_context()
    feed = {"a": np.array([7, -7, 5], np.int32), "b": np.array([2, 3, 0], np.int32)}
    with pytest.raises(Exception):
        onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    with pytest.raises(InputError, match=f"{op_type}: integer division by zero"):
        context.execute(feed)
    feed["b"] = np.array([2, 3, -4], np.int32)
    [expected] = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_array_equal(np.asarray(context.execute(feed)["y"]), expected)


@pytest.mark.parametrize("boxes", [
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]],        # two boxes of no area: IoU 0/0
    [[0, 0, 1, 1], [0.5, 0.5, 0.5, 2], [2, 2, 3, 3]],  # a line touching a box; one box apart
])
def test_nms_of_boxes_without_area_matches_onnxruntime(boxes):
    """Found while fixing issue 18: boxes of zero area had IoU 0/0 = NaN, which suppressed them; onnxruntime
    gives such a pair IoU 0 and keeps both."""
    from onnx import numpy_helper
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max"], ["y"])
    graph = helper.make_graph([node], "nms", [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 4]),
                                              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
                              [numpy_helper.from_array(np.array([10], np.int64), "max")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = model.SerializeToString()
    feed = {"boxes": np.array([boxes], np.float32), "scores": np.array([[[0.9, 0.8, 0.7]]], np.float32)}
    [expected] = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    assert len(expected) == 3  # none suppressed
    outputs = Builder().build(parse_onnx(model)).create_execution_context().execute(feed)
    np.testing.assert_array_equal(np.asarray(outputs["y"]), expected)


def _one_node_model(op_type, attrs, shape, consts=(), outputs=1, opset=18) -> bytes:
    from onnx import numpy_helper
    node = helper.make_node(op_type, ["x"] + [name for name, _ in consts], [f"y{i}" for i in range(outputs)], **attrs)
    graph = helper.make_graph([node], "finding", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(outputs)],
                              [numpy_helper.from_array(value, name) for name, value in consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


_NO_ROI, _DOUBLE = ("roi", np.array([], np.float32)), ("scales", np.array([1, 1, 2, 2], np.float32))


@pytest.mark.parametrize("op_type, attrs, shape, consts, outputs, message", [
    ("Resize", {"mode": "foo"}, [1, 1, 2, 2], (_NO_ROI, _DOUBLE), 1, "attribute 'mode' = 'foo' is not one of"),
    ("Pad", {"mode": "foo"}, [1, 2], (("pads", np.array([0, 1, 0, 1], np.int64)),), 1,
     "attribute 'mode' = 'foo' is not one of"),
    ("GridSample", {"mode": "foo"}, [1, 1, 2, 2], (("grid", np.zeros((1, 2, 2, 2), np.float32)),), 1,
     "attribute 'mode' = 'foo' is not one of"),
    ("Split", {"num_outputs": 0, "axis": 1}, [1, 4], (), 1, "num_outputs 0 must be the node's number of outputs"),
    ("Split", {"num_outputs": 2, "axis": 1}, [1, 4], (), 3, "num_outputs 2 must be the node's number of outputs"),
    ("Unsqueeze", {}, [2], (("axes", np.array([0, 0], np.int64)),), 1, r"axes \[0, 0\] must be distinct"),
    ("Unsqueeze", {}, [2], (("axes", np.array([5], np.int64)),), 1, r"axes \[5\] must be distinct and in \[-2, 1\]"),
    ("Squeeze", {}, [1, 2], (("axes", np.array([4], np.int64)),), 1, r"axes \[4\] must be distinct and in \[-2, 1\]"),
])
def test_bad_modes_counts_and_axes_are_conversion_errors(op_type, attrs, shape, consts, outputs, message):
    """Found while fixing issue 18: a mode the spec does not name was a KeyError in the converter (Resize, Pad,
    GridSample), Split's num_outputs 0 a ZeroDivisionError, Unsqueeze's repeated axis a StopIteration, and an axis
    past the rank was wrapped onto another (Squeeze [4] of a 2-d input squeezed axis 0). onnxruntime refuses each."""
    from tensorkiln.importers.onnx.context import ConversionError
    model = _one_node_model(op_type, attrs, shape, consts, outputs)
    if op_type != "Split":  # onnxruntime aborts the whole process on a num_outputs its outputs do not match
        with pytest.raises(Exception):
            onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
                None, {"x": np.ones(shape, np.float32)})
    with pytest.raises(ConversionError, match=message):
        parse_onnx(model)


def test_squeeze_and_unsqueeze_with_negative_axes_match_onnxruntime():
    for op_type, shape, axes in (("Unsqueeze", [2, 3], [-1, 0]), ("Squeeze", [1, 3, 1], [-1, 0])):
        model = _one_node_model(op_type, {}, shape, (("axes", np.array(axes, np.int64)),))
        feed = {"x": np.arange(np.prod(shape), dtype=np.float32).reshape(shape)}
        [expected] = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
        outputs = Builder().build(parse_onnx(model)).create_execution_context().execute(feed)
        np.testing.assert_array_equal(np.asarray(outputs["y0"]), expected)


@pytest.mark.parametrize("op_type, attrs, shape, consts, message", [
    ("ScatterElements", {"reduction": "foo"}, [2, 2],
     (("indices", np.zeros((1, 2), np.int64)), ("updates", np.ones((1, 2), np.float32))),
     "attribute 'reduction' = 'foo' is not one of"),
    ("ScatterND", {"reduction": "foo"}, [2, 2],
     (("indices", np.zeros((1, 1), np.int64)), ("updates", np.ones((1, 2), np.float32))),
     "attribute 'reduction' = 'foo' is not one of"),
    ("LSTM", {"activations": ["foo", "Tanh", "Tanh"], "hidden_size": 2}, [1, 1, 2],
     (("W", np.ones((1, 8, 2), np.float32)), ("R", np.ones((1, 8, 2), np.float32))),
     r"activations \['foo'\] are not ones the ONNX spec names"),
])
def test_unknown_reduction_or_activation_is_a_conversion_error(op_type, attrs, shape, consts, message):
    """Found while fixing issue 18: an unknown scatter reduction or recurrent activation was a KeyError in the
    kernel at build time. onnxruntime refuses the activation; it runs an unknown reduction as 'none', which the
    spec does not allow (it names five), so tensorkiln refuses it rather than guess."""
    from tensorkiln.importers.onnx.context import ConversionError
    model = _one_node_model(op_type, attrs, shape, consts)
    if op_type == "LSTM":
        with pytest.raises(Exception):
            onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
                None, {"x": np.ones(shape, np.float32)})
    with pytest.raises(ConversionError, match=message):
        parse_onnx(model)


@pytest.mark.parametrize("op_type", ["Conv", "MaxPool"])
def test_an_unknown_auto_pad_is_a_conversion_error(op_type):
    """Found while fixing issue 18: auto_pad = 'foo' was read as NOTSET (explicit pads); onnxruntime refuses it."""
    from tensorkiln.importers.onnx.context import ConversionError
    consts = (("w", np.ones((2, 2, 1, 1), np.float32)),) if op_type == "Conv" else ()
    attrs = {"auto_pad": "foo"} if op_type == "Conv" else {"auto_pad": "foo", "kernel_shape": [2, 2]}
    model = _one_node_model(op_type, attrs, [1, 2, 4, 4], consts)
    with pytest.raises(Exception):
        onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
            None, {"x": np.ones([1, 2, 4, 4], np.float32)})
    with pytest.raises(ConversionError, match="attribute 'auto_pad' = 'foo' is not one of"):
        parse_onnx(model)
