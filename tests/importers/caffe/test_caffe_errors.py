"""Bad Caffe input: syntax errors, blobs that disagree with the prototxt, unknown layer types (and the plugin
that makes one known)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import tensorkiln as tk
from caffe_netfiles import input_layer, run_net, write_net
from tensorkiln.errors import ModelFormatError, ShapeError, UnsupportedOpError
from tensorkiln.importers.caffe import parse_caffe
from tensorkiln.plugins import Plugin, register_plugin, unregister_plugin


def test_prototxt_syntax_error_names_line_and_column(tmp_path):
    proto = input_layer("data", (1, 3, 4, 4)) + 'layer {\n  name: "conv"\n  type: "Convolution"\n  bottom "data"\n}\n'
    deploy, _ = write_net(tmp_path, proto)
    with pytest.raises(ModelFormatError, match=r"line 5, column 10") as error:
        parse_caffe(deploy)
    assert "deploy.prototxt" in str(error.value)


def test_blob_shape_disagreeing_with_prototxt(tmp_path):
    proto = input_layer("data", (1, 3, 8, 8)) + (
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        'convolution_param { num_output: 4 kernel_size: 3 } }')
    deploy, model = write_net(tmp_path, proto, {"conv1": [np.zeros((4, 3, 5, 5), np.float32), np.zeros(4, np.float32)]})
    with pytest.raises(ModelFormatError, match=r"'conv1'.*\(4, 3, 5, 5\).*prototxt implies \(4, 3, 3, 3\)"):
        parse_caffe(deploy, model)


def test_missing_weights_and_unknown_output(tmp_path):
    proto = input_layer("data", (1, 3, 8, 8)) + (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }')
    deploy, _ = write_net(tmp_path, proto)
    with pytest.raises(ModelFormatError, match="no caffemodel was given"):
        parse_caffe(deploy)
    deploy, model = write_net(tmp_path, proto, {"fc": [np.zeros((2, 192), np.float32), np.zeros(2, np.float32)]})
    with pytest.raises(ShapeError, match="'nope'"):
        parse_caffe(deploy, model, outputs=["nope"])


SWISH_NET = input_layer("data", (2, 3, 4, 4)) + (
    'layer { name: "act" type: "MySwish" bottom: "data" top: "act" }\n'
    'layer { name: "relu" type: "ReLU" bottom: "act" top: "out" }\n')


def test_unknown_layer_type_is_named_with_the_plugin_hint(tmp_path):
    deploy, _ = write_net(tmp_path, SWISH_NET)
    with pytest.raises(UnsupportedOpError) as error:
        parse_caffe(deploy)
    message = str(error.value)
    assert "MySwish at layer 'act'" in message and "register_plugin('MySwish')" in message


def test_a_registered_plugin_serves_an_unknown_layer_type(tmp_path):
    @register_plugin("MySwish")
    class MySwish(Plugin):
        @dataclasses.dataclass(frozen=True)
        class Params:
            beta: float = 1.0

        @classmethod
        def from_caffe(cls, layer, blobs):
            return {"beta": 1.5}

        def output_specs(self, inputs):
            return [inputs[0]]

        def forward(self, inputs):
            return [inputs[0] * torch.sigmoid(self.params.beta * inputs[0])]

    try:
        x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
        y = run_net(tmp_path, SWISH_NET, {}, {"data": x})["out"]
        np.testing.assert_allclose(y, np.maximum(x / (1 + np.exp(-1.5 * x)), 0), rtol=1e-5, atol=1e-6)
    finally:
        unregister_plugin("MySwish")


def test_layer_of_a_caffemodel_given_as_prototxt(tmp_path):
    model = tmp_path / "net.caffemodel"
    model.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelFormatError, match="looks like a caffemodel"):
        parse_caffe(model, model)
    _ = tk  # the package import registers the layer kinds the converters use
