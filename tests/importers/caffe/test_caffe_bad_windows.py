"""Caffe Convolution, Deconvolution and Pooling layers with impossible windows (stride: 0, stride_h: 0, dilation: 0,
group: 0 or one that does not divide the channels): one ModelFormatError line naming the layer, the field and its
value, never a ZeroDivisionError traceback. (Caffe's fields are unsigned: a prototxt cannot hold a negative pad.)"""
from __future__ import annotations

import numpy as np
import pytest

from caffe_netfiles import input_layer, write_net
from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.caffe import parse_caffe


def _layer(kind: str, params: str) -> str:
    field = "pooling_param" if kind == "Pooling" else "convolution_param"
    return f'layer {{ name: "bad_window" type: "{kind}" bottom: "data" top: "out" {field} {{ {params} }} }}\n'


CONV = "num_output: 6 kernel_size: 3"
CASES = [
    # (layer type, parameters, the phrase the error must hold)
    ("Convolution", f"{CONV} stride: 0", "stride = [0, 0] must be positive"),
    ("Convolution", f"{CONV} stride_h: 0 stride_w: 2", "stride_h/stride_w = [0, 2] must be positive"),
    ("Convolution", f"{CONV} dilation: 0", "dilation = [0, 0] must be positive"),
    ("Convolution", f"{CONV} group: 0", "group = 0 must be positive"),
    ("Convolution", "num_output: 6 kernel_size: 3 group: 3", "group = 3 does not divide the 4 input channels"),
    ("Convolution", "num_output: 6 kernel_size: 0", "has no kernel size"),
    ("Deconvolution", f"{CONV} stride: 0", "stride = [0, 0] must be positive"),
    ("Deconvolution", f"{CONV} group: 0", "group = 0 must be positive"),
    ("Pooling", "pool: MAX kernel_size: 2 stride: 0", "stride = [0, 0] must be positive"),
    ("Pooling", "pool: AVE kernel_size: 2 stride_h: 0 stride_w: 2", "stride_h/stride_w = [0, 2] must be positive"),
    ("Pooling", "pool: AVE kernel_size: 0", "has no kernel size"),
]


@pytest.mark.parametrize("kind, params, phrase", CASES, ids=[f"{k}-{p}" for k, p, _ in CASES])
def test_impossible_window_is_one_clear_error(tmp_path, kind, params, phrase):
    # weights of the right size for a valid layer, so that only the window can be wrong
    blobs = None if kind == "Pooling" else {"bad_window": [np.ones((6, 4, 3, 3), np.float32), np.zeros(6, np.float32)]}
    deploy, model = write_net(tmp_path, input_layer("data", (1, 4, 8, 8)) + _layer(kind, params), blobs)
    with pytest.raises(ModelFormatError) as error:
        parse_caffe(deploy, model)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"Caffe layer 'bad_window' ({kind}): ") and phrase in message
