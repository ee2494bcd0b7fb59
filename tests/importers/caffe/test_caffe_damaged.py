"""Damaged or malformed Caffe nets found by fuzzing the importer: one ModelFormatError line each, never an
IndexError or AttributeError from inside a converter, nor a name that only fails when the engine is loaded."""
from __future__ import annotations

import numpy as np
import pytest

from caffe_netfiles import input_layer, run_net, write_net
from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.caffe import parse_caffe


def _refused(tmp_path, prototxt: str, *phrases: str) -> None:
    deploy, _ = write_net(tmp_path, prototxt)
    with pytest.raises(ModelFormatError) as error:
        parse_caffe(deploy)
    message = str(error.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


@pytest.mark.parametrize("layer, where", [
    ('layer { name: "t0\\nimport this" type: "ReLU" bottom: "data" top: "out" }', "the name of layer"),
    ('layer { name: "relu" type: "ReLU" bottom: "data" top: "o\\tut" }', "a top of layer 'relu'"),
    ('layer { name: "relu" type: "ReLU" bottom: "data" top: "" }', "a top of layer 'relu' (ReLU) is empty"),
])
def test_names_an_engine_cannot_hold(tmp_path, layer, where):
    _refused(tmp_path, input_layer("data", (1, 2, 3, 3)) + layer, f"in the Caffe net, {where}")


def test_concat_without_bottoms(tmp_path):
    _refused(tmp_path, input_layer("data", (1, 2, 3, 3)) + 'layer { name: "cat" type: "Concat" top: "out" }',
             "Caffe layer 'cat' (Concat): has no bottom blobs")


def test_convolution_of_a_blob_without_spatial_dimensions(tmp_path):
    _refused(tmp_path, input_layer("data", (4, 2)) + (
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "out" '
        'convolution_param { num_output: 2 kernel_size: 1 } }'),
             "Caffe layer 'conv' (Convolution): convolves blobs of shape (N, C, H, ...); its bottom has shape [4, 2]")


def test_v1_flatten_has_no_parameters_and_uses_caffes_defaults(tmp_path):
    """A V1 net (`layers {` with enum types): FLATTEN has no flatten_param (it raised AttributeError)."""
    prototxt = ('input: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 2\ninput_dim: 2\n'
                'layers { name: "flat" type: FLATTEN bottom: "data" top: "out" }\n')
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    out = run_net(tmp_path, prototxt, {}, {"data": x})["out"]
    np.testing.assert_array_equal(out, x.reshape(2, 12))


def test_slice_without_tops(tmp_path):
    _refused(tmp_path, input_layer("data", (1, 2, 3, 3)) + 'layer { name: "cut" type: "Slice" bottom: "data" }',
             "Caffe layer 'cut' (Slice): has no top blobs")


def test_net_name_with_a_control_character(tmp_path):
    """The net's name becomes the engine's network name, which the engine loader checks like any other name."""
    _refused(tmp_path, 'name: "t0\\nimport this"\n' + input_layer("data", (1, 2, 3, 3)) +
             'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }', "in the Caffe net, the net's name")
