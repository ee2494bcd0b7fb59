"""Caffe blob names are reserved before any layer is converted: a converter that emits several layers (LRN
WITHIN_CHANNEL: square, pool, power, product) never takes a blob's name for its intermediates, so every blob keeps
its own name even where it is literally one a generated name would take ("<layer>/pool_output_0"), and the net
computes the same as with plain names."""
from __future__ import annotations

import numpy as np

from caffe_netfiles import input_layer, run_net, write_net
from tensorkiln.importers.caffe import parse_caffe


def _net(first: str, second: str) -> str:
    return input_layer("data", (1, 3, 6, 6)) + (
        f'layer {{ name: "norm1" type: "LRN" bottom: "data" top: "{first}" '
        'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }\n'
        f'layer {{ name: "relu" type: "ReLU" bottom: "{first}" top: "{second}" }}\n'
        f'layer {{ name: "scale" type: "Power" bottom: "{second}" top: "out" power_param {{ scale: 2.0 }} }}\n')


def test_blob_named_like_a_generated_name_keeps_its_name(tmp_path):
    colliding = _net("norm1/pool_output_0", "norm1/square_output_0")
    deploy, _ = write_net(tmp_path, colliding)
    network = parse_caffe(deploy)
    names = [t.name for t in network.ir.tensors()]
    assert len(names) == len(set(names)), f"tensor names repeat: {names}"
    by_name = {t.name: t for t in network.ir.tensors()}
    assert by_name["norm1/pool_output_0"].producer.name == "norm1"  # the LRN's result, not its inner pooling
    assert by_name["norm1/square_output_0"].producer.name == "relu"
    feed = {"data": np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    got = run_net(tmp_path, colliding, {}, feed)["out"]
    plain = run_net(tmp_path, _net("lrn", "relu"), {}, feed)["out"]
    np.testing.assert_array_equal(got, plain)
    assert (got > 0).any()
