"""The plugin API: registration, engines that store plugins as type + JSON parameters, the load-time check,
the built-in Normalize / ROIPooling / Proposal against numpy, ONNX custom-domain nodes, and the fallback."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import torch

import tensorkiln as tk
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.plugins import MissingPluginError, Plugin, TensorDesc, add_plugin, register_plugin, unregister_plugin
from tensorkiln.plugins.builtin.proposal import generate_anchors

RNG = np.random.default_rng(11)


class ScaledSoftsign(Plugin):
    """x * gain / (1 + |x|), and a second output: the row sums of the first."""

    @dataclasses.dataclass(frozen=True)
    class Params:
        gain: float = 1.0

    def output_specs(self, inputs):
        x = inputs[0]
        return [x, TensorDesc(x.shape[:-1], x.dtype)]

    def forward(self, inputs):
        y = inputs[0] * self.params.gain / (1 + inputs[0].abs())
        return [y, y.sum(-1)]


@pytest.fixture
def scaled_softsign():
    register_plugin("ScaledSoftsign")(ScaledSoftsign)
    yield ScaledSoftsign
    unregister_plugin("ScaledSoftsign")


def softsign_engine() -> tk.Engine:
    network = tk.NetworkDefinition("custom")
    x = network.add_input("x", tk.DataType.FLOAT, (3, 5))
    layer = add_plugin(network, "ScaledSoftsign", [x], {"gain": 2.5}, output_names=["y", "sums"])
    for tensor in layer.outputs:
        network.mark_output(tensor)
    return tk.Builder().build(network)


def test_engine_stores_plugin_by_name_and_json_params_and_checks_it_at_load(scaled_softsign):
    blob = softsign_engine().serialize()
    step = next(s for s in tk.Runtime().deserialize(blob).plan.steps if s.kind == "plugin")
    assert (step.op.type, json.loads(step.op.params_json)) == ("ScaledSoftsign", {"gain": 2.5})
    # the name travels, the code does not (neither its source nor a pickle of it)
    assert b"ScaledSoftsign" in blob and b"inputs[0].abs()" not in blob and b"test_plugin_api" not in blob
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    out = tk.Runtime().deserialize(blob).create_execution_context().execute({"x": x})
    np.testing.assert_allclose(out["y"], 2.5 * x / (1 + np.abs(x)), rtol=1e-6)
    np.testing.assert_allclose(out["sums"], (2.5 * x / (1 + np.abs(x))).sum(-1), rtol=1e-5)

    unregister_plugin("ScaledSoftsign")
    with pytest.raises(MissingPluginError, match=r"'ScaledSoftsign' \(layers \['ScaledSoftsign'\]\).*register"):
        tk.Runtime().deserialize(blob)
    register_plugin("ScaledSoftsign")(ScaledSoftsign)
    assert tk.Runtime().deserialize(blob).num_layers >= 1


def test_registration_errors(scaled_softsign):
    with pytest.raises(ValueError, match="registered twice"):
        register_plugin("ScaledSoftsign")(ScaledSoftsign)
    with pytest.raises(ValueError, match="registered twice"):
        register_plugin("PriorBox")(ScaledSoftsign)  # a built-in name

    class Loose(Plugin):
        @dataclasses.dataclass
        class Params:
            gain: float = 1.0

    with pytest.raises(TypeError, match="frozen dataclass"):
        register_plugin("Loose")(Loose)
    network = tk.NetworkDefinition("bad")
    x = network.add_input("x", tk.DataType.FLOAT, (2, 2))
    with pytest.raises(ValueError, match=r"unknown parameters \['gian'\]"):
        add_plugin(network, "ScaledSoftsign", [x], {"gian": 2.0})
    with pytest.raises(tk.errors.BuildError, match="no plugin is registered under the type 'Nope'"):
        add_plugin(network, "Nope", [x])


@pytest.mark.parametrize("across_spatial, channel_shared", [(True, True), (False, False), (False, True)])
def test_normalize_matches_numpy(across_spatial, channel_shared):
    x = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
    scale = RNG.uniform(1, 20, (1 if channel_shared else 4,)).astype(np.float32)
    network = tk.NetworkDefinition("norm")
    tensor = network.add_input("x", tk.DataType.FLOAT, x.shape)
    layer = add_plugin(network, "Normalize", [tensor, network.weights(scale, "scale")],
                       dict(across_spatial=across_spatial, channel_shared=channel_shared), output_names=["y"])
    network.mark_output(layer.get_output(0))
    y = tk.Builder().build(network).create_execution_context().execute({"x": x})["y"]
    norm = np.sqrt((x ** 2).sum(axis=(1, 2, 3) if across_spatial else 1, keepdims=True) + 1e-10)
    expected = x / norm * (scale if channel_shared else scale.reshape(1, 4, 1, 1))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def numpy_roi_pool(features, rois, pooled, spatial_scale):
    """Caffe's ROIPoolingLayer::Forward_cpu."""
    out = np.zeros((len(rois), features.shape[1], pooled, pooled), np.float32)
    height, width = features.shape[2:]
    for r, (index, *corners) in enumerate(rois):
        x1, y1, x2, y2 = (int(np.floor(abs(c * spatial_scale) + 0.5) * np.sign(c)) for c in corners)
        bin_h, bin_w = max(y2 - y1 + 1, 1) / pooled, max(x2 - x1 + 1, 1) / pooled
        for ph in range(pooled):
            for pw in range(pooled):
                h0 = min(max(int(np.floor(ph * bin_h)) + y1, 0), height)
                h1 = min(max(int(np.ceil((ph + 1) * bin_h)) + y1, 0), height)
                w0 = min(max(int(np.floor(pw * bin_w)) + x1, 0), width)
                w1 = min(max(int(np.ceil((pw + 1) * bin_w)) + x1, 0), width)
                if h1 > h0 and w1 > w0:
                    out[r, :, ph, pw] = features[int(index), :, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def test_roi_pooling_matches_numpy():
    features = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = np.array([[0, 0, 0, 40, 30], [1, 13, 5, 100, 70], [1, -10, -6, 20, 150], [0, 50, 50, 51, 52]], np.float32)
    network = tk.NetworkDefinition("roi")
    f = network.add_input("features", tk.DataType.FLOAT, features.shape)
    r = network.add_input("rois", tk.DataType.FLOAT, rois.shape)
    layer = add_plugin(network, "ROIPooling", [f, r], dict(pooled_h=3, pooled_w=3, spatial_scale=0.125),
                       output_names=["pooled"])
    network.mark_output(layer.get_output(0))
    y = tk.Builder().build(network).create_execution_context().execute({"features": features, "rois": rois})
    np.testing.assert_allclose(y["pooled"], numpy_roi_pool(features, rois, 3, 0.125), rtol=1e-6)


def test_proposal_anchors_and_outputs():
    # py-faster-rcnn's generate_anchors() for its defaults, as printed in its source
    expected = np.array([[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                         [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                         [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]], np.float32)
    np.testing.assert_array_equal(generate_anchors(16, (0.5, 1.0, 2.0), (8.0, 16.0, 32.0)).numpy(), expected)
    network = tk.NetworkDefinition("rpn")
    scores = network.add_input("scores", tk.DataType.FLOAT, (1, 18, 5, 6))
    deltas = network.add_input("deltas", tk.DataType.FLOAT, (1, 36, 5, 6))
    info = network.add_input("info", tk.DataType.FLOAT, (1, 3))
    layer = add_plugin(network, "Proposal", [scores, deltas, info], dict(post_nms_top_n=10, min_size=4),
                       output_names=["rois", "roi_scores"])
    for tensor in layer.outputs:
        network.mark_output(tensor)
    feed = {"scores": RNG.uniform(size=(1, 18, 5, 6)).astype(np.float32),
            "deltas": (RNG.standard_normal((1, 36, 5, 6)) * 0.1).astype(np.float32),
            "info": np.array([[80, 96, 1]], np.float32)}
    out = tk.Runtime().deserialize(tk.Builder().build(network).serialize()).create_execution_context().execute(feed)
    rois, roi_scores = out["rois"], out["roi_scores"][:, 0]
    assert 0 < len(rois) <= 10 and rois.shape[1] == 5 and (rois[:, 0] == 0).all()
    assert (np.diff(roi_scores) <= 0).all()  # best first
    assert (rois[:, 1:] >= 0).all() and (rois[:, [1, 3]] <= 95).all() and (rois[:, [2, 4]] <= 79).all()
    assert roi_scores[0] == feed["scores"][0, 9:].max()  # foreground scores are the second half of the channels


def onnx_model(nodes, inputs, outputs, opsets):
    graph = oh.make_graph(nodes, "g", inputs, outputs)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid(d, v) for d, v in opsets])


def test_onnx_custom_domain_node_maps_to_the_plugin_of_its_name(scaled_softsign):
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 5])
    outs = [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("y", "s")]
    nodes = [oh.make_node("ScaledSoftsign", ["x"], ["a", "s"], domain="my.ops", gain=0.5),
             oh.make_node("Relu", ["a"], ["y"])]
    model = onnx_model(nodes, [x], outs, [("", 17), ("my.ops", 1)])
    engine = tk.Runtime().deserialize(tk.Builder().build(parse_onnx(model)).serialize())
    data = RNG.standard_normal((3, 5)).astype(np.float32)
    out = engine.create_execution_context().execute({"x": data})
    soft = 0.5 * data / (1 + np.abs(data))
    np.testing.assert_allclose(out["y"], np.maximum(soft, 0), rtol=1e-6)
    np.testing.assert_allclose(out["s"], soft.sum(-1), rtol=1e-5)


def fallback_model():
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 7, 5])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    shape = onnx.numpy_helper.from_array(np.array([4, 6], np.int64), "shape")
    nodes = [oh.make_node("Relu", ["x"], ["r"]), oh.make_node("CenterCropPad", ["r", "shape"], ["c"], axes=[2, 3]),
             oh.make_node("Neg", ["c"], ["y"])]
    return oh.make_model(oh.make_graph(nodes, "g", [x], [y], [shape]), opset_imports=[oh.make_opsetid("", 18)])


@pytest.fixture
def no_center_crop_converter(monkeypatch):
    """CenterCropPad as an op tensorkiln has no converter for (whatever the converter families hold today)."""
    from tensorkiln.importers.onnx import parser

    original = parser.find_converter
    monkeypatch.setattr(parser, "find_converter", lambda domain, op_type: None if op_type == "CenterCropPad"
                        else original(domain, op_type))


def test_fallback_runs_an_op_without_converter_and_serializes(caplog, no_center_crop_converter):
    import onnxruntime

    model = fallback_model()
    with pytest.raises(UnsupportedOpError, match="CenterCropPad.*--allow-fallback"):
        parse_onnx(model)
    with caplog.at_level(logging.WARNING, logger="tensorkiln.importers.onnx"):
        network = parse_onnx(model, allow_fallback=True)
    assert [r.getMessage() for r in caplog.records if "fallback layer" in r.getMessage()] == [
        "fallback layer: node 'CenterCropPad:c' (CenterCropPad, opset 18) runs on onnx's reference implementation "
        "(slow)"]
    engine = tk.Runtime().deserialize(tk.Builder().build(network).serialize())
    assert [s.kind for s in engine.plan.steps].count("onnx_fallback") == 1
    data = RNG.standard_normal((2, 3, 7, 5)).astype(np.float32)
    got = engine.create_execution_context().execute({"x": data})["y"]
    expected = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": data})[0]
    assert got.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    _ = torch  # the kernels are torch; the fallback hands numpy to onnx.reference and back


def test_engine_whose_plugin_parameters_the_registered_class_rejects(scaled_softsign):
    blob = softsign_engine().serialize()
    unregister_plugin("ScaledSoftsign")

    @register_plugin("ScaledSoftsign")
    class Renamed(ScaledSoftsign):  # a later version of the plugin, whose parameter has another name
        @dataclasses.dataclass(frozen=True)
        class Params:
            factor: float = 1.0

    with pytest.raises(MissingPluginError, match=r"does not accept the engine's parameters \{\"gain\":2.5\}"):
        tk.Runtime().deserialize(blob)
