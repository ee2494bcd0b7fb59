"""An SSD head written as a Caffe prototxt (Normalize, PriorBox, Permute, Flatten, Reshape, Softmax,
DetectionOutput): the Caffe converters of the SSD layers, checked with the numpy SSD of test_ssd_detection."""
from __future__ import annotations

import numpy as np

import tensorkiln as tk
from tensorkiln.importers.caffe import parse_caffe
from tensorkiln.importers.caffe.schema import caffe_pb2
from test_ssd_detection import IMAGE, NUM_CLASSES, reference_detections

PRIORS = 4  # per position: min size, sqrt(min * max), ratio 2 and its flip

PROTOTXT = f"""
name: "ssd_head"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 30 dim: 40 }} }} }}
layer {{ name: "feat" type: "Convolution" bottom: "data" top: "feat"
        convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 stride: 10 }} }}
layer {{ name: "feat_norm" type: "Normalize" bottom: "feat" top: "feat_norm"
        norm_param {{ across_spatial: false channel_shared: false }} }}
layer {{ name: "loc" type: "Convolution" bottom: "feat_norm" top: "loc"
        convolution_param {{ num_output: {PRIORS * 4} kernel_size: 3 pad: 1 }} }}
layer {{ name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
        permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}
layer {{ name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }}
layer {{ name: "conf" type: "Convolution" bottom: "feat_norm" top: "conf"
        convolution_param {{ num_output: {PRIORS * NUM_CLASSES} kernel_size: 3 pad: 1 }} }}
layer {{ name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm"
        permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}
layer {{ name: "conf_rs" type: "Reshape" bottom: "conf_perm" top: "conf_rs"
        reshape_param {{ shape {{ dim: 0 dim: -1 dim: {NUM_CLASSES} }} }} }}
layer {{ name: "conf_sm" type: "Softmax" bottom: "conf_rs" top: "conf_sm" softmax_param {{ axis: 2 }} }}
layer {{ name: "conf_flat" type: "Flatten" bottom: "conf_sm" top: "conf_flat" }}
layer {{ name: "priors" type: "PriorBox" bottom: "feat_norm" bottom: "data" top: "priors"
        prior_box_param {{ min_size: 8 max_size: 16 aspect_ratio: 2 flip: true
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }} }}
layer {{ name: "detection_out" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_flat" bottom: "priors"
        top: "detection_out"
        detection_output_param {{ num_classes: {NUM_CLASSES} share_location: true background_label_id: 0
          nms_param {{ nms_threshold: 0.35 top_k: 30 }} code_type: CENTER_SIZE keep_top_k: 12
          confidence_threshold: 0.2 }} }}
"""


def write_caffemodel(path, rng) -> dict[str, list[np.ndarray]]:
    blobs = {"feat": [rng.standard_normal((8, 3, 3, 3)), rng.standard_normal(8)],
             "feat_norm": [rng.uniform(1, 20, 8)],
             "loc": [rng.standard_normal((PRIORS * 4, 8, 3, 3)) * 0.1, rng.standard_normal(PRIORS * 4) * 0.1],
             "conf": [rng.standard_normal((PRIORS * NUM_CLASSES, 8, 3, 3)), rng.standard_normal(PRIORS * NUM_CLASSES)]}
    net = caffe_pb2.NetParameter(name="ssd_head")
    for name, arrays in blobs.items():
        layer = net.layer.add(name=name)
        for array in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(np.asarray(array, np.float32).reshape(-1).tolist())
    path.write_bytes(net.SerializeToString())
    return blobs


def test_caffe_ssd_head_matches_numpy_ssd(tmp_path):
    rng = np.random.default_rng(3)
    deploy, model = tmp_path / "deploy.prototxt", tmp_path / "ssd.caffemodel"
    deploy.write_text(PROTOTXT)
    blobs = write_caffemodel(model, rng)
    network = parse_caffe(deploy, model, outputs=["detection_out", "feat", "feat_norm", "loc_flat", "conf_flat"])
    engine = tk.Runtime().deserialize(tk.Builder().build(network).serialize())
    image = rng.standard_normal((2, *IMAGE[1:])).astype(np.float32)
    out = engine.create_execution_context().execute({"data": image})

    feat = out["feat"]
    scale = blobs["feat_norm"][0].reshape(1, 8, 1, 1)
    np.testing.assert_allclose(out["feat_norm"], feat / np.sqrt((feat ** 2).sum(1, keepdims=True) + 1e-10) * scale,
                               rtol=1e-4, atol=1e-5)
    assert np.allclose(out["conf_flat"].reshape(2, -1, NUM_CLASSES).sum(-1), 1, atol=1e-5)
    expected = reference_detections(out["loc_flat"], out["conf_flat"], 0.35, 30, 12, 0.2)
    got = out["detection_out"]
    assert got.shape == expected.shape and got.shape[2] > 2
    np.testing.assert_array_equal(got[..., :2], expected[..., :2])
    np.testing.assert_allclose(got[..., 2:], expected[..., 2:], rtol=1e-5, atol=1e-6)
