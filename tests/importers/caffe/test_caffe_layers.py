"""Caffe layers against references written here in numpy, following Caffe's C++ loops (nets written by the
test: a prototxt text and a caffemodel with random blobs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caffe_netfiles import input_layer, run_net

RNG = np.random.default_rng(5)


def rand(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def caffe_pool(x, kernel, stride, pad, method):
    """Caffe's PoolingLayer::Forward_cpu: ceil sizes, last window inside the image, AVE divisor with padding."""
    n, c, h, w = x.shape
    out_h = int(np.ceil((h + 2 * pad - kernel) / stride)) + 1
    out_w = int(np.ceil((w + 2 * pad - kernel) / stride)) + 1
    if pad:
        out_h -= (out_h - 1) * stride >= h + pad
        out_w -= (out_w - 1) * stride >= w + pad
    y = np.zeros((n, c, out_h, out_w), np.float64)
    for ph in range(out_h):
        for pw in range(out_w):
            hs, ws = ph * stride - pad, pw * stride - pad
            he, we = min(hs + kernel, h + pad), min(ws + kernel, w + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            y[:, :, ph, pw] = window.max(axis=(2, 3)) if method == "MAX" else window.sum(axis=(2, 3)) / size
    return y


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size, kernel, stride, pad", [(5, 2, 2, 1), (7, 3, 2, 1), (6, 3, 2, 0), (11, 3, 3, 2)])
def test_pooling_rounding_clipping_and_divisor(tmp_path, method, size, kernel, stride, pad):
    x = rand(2, 3, size, size + 2)
    proto = input_layer("data", x.shape) + (
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ pool: {method} '
        f'kernel_size: {kernel} stride: {stride} pad: {pad} }} }}')
    y = run_net(tmp_path, proto, {}, {"data": x})["pool"]
    np.testing.assert_allclose(y, caffe_pool(x, kernel, stride, pad, method), rtol=1e-5, atol=1e-6)


def test_global_pooling(tmp_path):
    x = rand(2, 4, 5, 3)
    proto = input_layer("data", x.shape) + (
        'layer { name: "max" type: "Pooling" bottom: "data" top: "max" '
        'pooling_param { pool: MAX global_pooling: true } }'
        'layer { name: "ave" type: "Pooling" bottom: "data" top: "ave" '
        'pooling_param { pool: AVE global_pooling: true } }')
    y = run_net(tmp_path, proto, {}, {"data": x})
    np.testing.assert_allclose(y["max"], x.max(axis=(2, 3), keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(y["ave"], x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("group, dilation, bias", [(1, 1, True), (3, 2, False), (6, 1, True)])
def test_convolution(tmp_path, group, dilation, bias):
    x, w, b = rand(2, 6, 9, 8), rand(12, 6 // group, 3, 2), rand(12)
    proto = input_layer("data", x.shape) + (
        f'layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param {{ num_output: 12 '
        f'kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 1 pad_w: 0 group: {group} dilation: {dilation} '
        f'bias_term: {str(bias).lower()} }} }}')
    y = run_net(tmp_path, proto, {"conv": [w, b] if bias else [w]}, {"data": x})["conv"]
    reference = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b) if bias else None,
                         stride=2, padding=(1, 0), dilation=dilation, groups=group).numpy()
    np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-5)


def test_deconvolution(tmp_path):
    x, w, b = rand(1, 4, 5, 6), rand(4, 3, 4, 4), rand(6)
    proto = input_layer("data", x.shape) + (
        'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" convolution_param { num_output: 6 '
        'kernel_size: 4 stride: 2 pad: 1 group: 2 } }')
    y = run_net(tmp_path, proto, {"up": [w, b]}, {"data": x})["up"]
    reference = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=2,
                                   padding=1, groups=2).numpy()
    assert y.shape == (1, 6, 10, 12)
    np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("transpose", [False, True])
def test_inner_product(tmp_path, transpose):
    x, w, b = rand(3, 2, 3, 4), rand(5, 24), rand(5)
    proto = input_layer("data", x.shape) + (
        f'layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ num_output: 5 '
        f'transpose: {str(transpose).lower()} }} }}')
    y = run_net(tmp_path, proto, {"fc": [w.T.copy() if transpose else w, b]}, {"data": x})["fc"]
    np.testing.assert_allclose(y, x.reshape(3, 24) @ w.T + b, rtol=1e-4, atol=1e-5)


def test_activations(tmp_path):
    x, slopes = rand(2, 3, 4, 5), rand(3)
    layers = {"relu": ('ReLU', 'relu_param { negative_slope: 0.1 }'), "prelu": ("PReLU", ""),
              "sigmoid": ("Sigmoid", ""), "tanh": ("TanH", ""), "elu": ("ELU", "elu_param { alpha: 0.5 }"),
              "power": ("Power", "power_param { power: 2 scale: 0.5 shift: 3 }"), "drop": ("Dropout", "")}
    proto = input_layer("data", x.shape) + "".join(
        f'layer {{ name: "{n}" type: "{t}" bottom: "data" top: "{n}" {p} }}\n' for n, (t, p) in layers.items())
    y = run_net(tmp_path, proto, {"prelu": [slopes]}, {"data": x})
    s = slopes.reshape(1, 3, 1, 1)
    expected = {"relu": np.where(x > 0, x, 0.1 * x), "prelu": np.where(x > 0, x, s * x),
                "sigmoid": 1 / (1 + np.exp(-x)),
                "tanh": np.tanh(x), "elu": np.where(x > 0, x, 0.5 * (np.exp(x) - 1)), "power": (3 + 0.5 * x) ** 2,
                "drop": x}
    for name, value in expected.items():
        np.testing.assert_allclose(y[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_batchnorm_with_scale_factor_then_scale(tmp_path):
    x = rand(2, 4, 3, 3)
    mean, var, factor = rand(4) * 5, np.abs(rand(4)) * 7 + 0.1, np.array([2.5], np.float32)  # running sums
    gamma, beta = rand(4), rand(4)
    proto = input_layer("data", x.shape) + (
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: 0.001 } }'
        'layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }')
    y = run_net(tmp_path, proto, {"bn": [mean, var, factor], "sc": [gamma, beta]}, {"data": x})
    c = (4, 1, 1)
    expected = (x - (mean / 2.5).reshape(c)) / np.sqrt((var / 2.5).reshape(c) + 0.001) * gamma.reshape(c) \
        + beta.reshape(c)
    assert list(y) == ["bn"]  # the in-place chain's final value carries the blob's name
    np.testing.assert_allclose(y["bn"], expected, rtol=1e-4, atol=1e-5)


def test_eltwise_any_number_of_inputs(tmp_path):
    a, b, c = rand(2, 3, 4), rand(2, 3, 4), rand(2, 3, 4)
    proto = "".join(input_layer(n, a.shape) for n in "abc") + (
        'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "sum" '
        'eltwise_param { operation: SUM coeff: 0.5 coeff: -1 coeff: 2 } }'
        'layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "prod" '
        'eltwise_param { operation: PROD } }'
        'layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "max" '
        'eltwise_param { operation: MAX } }')
    y = run_net(tmp_path, proto, {}, {"a": a, "b": b, "c": c})
    np.testing.assert_allclose(y["sum"], 0.5 * a - b + 2 * c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y["prod"], a * b * c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y["max"], np.maximum(np.maximum(a, b), c))


def test_data_movement_layers(tmp_path):
    x, z = rand(2, 6, 3, 4), rand(2, 2, 3, 4)
    proto = input_layer("x", x.shape) + input_layer("z", z.shape) + (
        'layer { name: "cat" type: "Concat" bottom: "x" bottom: "z" top: "cat" }'
        'layer { name: "sl" type: "Slice" bottom: "cat" top: "s0" top: "s1" top: "s2" '
        'slice_param { axis: 1 slice_point: 1 slice_point: 5 } }'
        'layer { name: "sp" type: "Split" bottom: "s1" top: "t0" top: "t1" }'
        'layer { name: "fl" type: "Flatten" bottom: "t0" top: "flat" flatten_param { axis: 2 } }'
        'layer { name: "rs" type: "Reshape" bottom: "t1" top: "rs" reshape_param { shape { dim: 0 dim: -1 dim: 6 } } }'
        'layer { name: "pm" type: "Permute" bottom: "s2" top: "pm" permute_param { order: 0 order: 2 } }'
        'layer { name: "sm" type: "Softmax" bottom: "s0" top: "sm" softmax_param { axis: 3 } }')
    y = run_net(tmp_path, proto, {}, {"x": x, "z": z})
    cat = np.concatenate([x, z], axis=1)
    np.testing.assert_array_equal(y["flat"], cat[:, 1:5].reshape(2, 4, 12))
    np.testing.assert_array_equal(y["rs"], cat[:, 1:5].reshape(2, 8, 6))
    np.testing.assert_array_equal(y["pm"], cat[:, 5:].transpose(0, 2, 1, 3))
    e = np.exp(cat[:, :1] - cat[:, :1].max(axis=3, keepdims=True))
    np.testing.assert_allclose(y["sm"], e / e.sum(axis=3, keepdims=True), rtol=1e-5, atol=1e-6)
    assert sorted(y) == ["flat", "pm", "rs", "sm"]  # default outputs: the tops no layer reads


def caffe_lrn_across(x, size, alpha, beta, k):
    squares = np.pad(x * x, ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))
    window = sum(squares[:, i:i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * window) ** beta


def caffe_lrn_within(x, size, alpha, beta):
    pad = size // 2
    squares = np.pad(x * x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h, w = x.shape[2:]
    window = sum(squares[:, :, i:i + h, j:j + w] for i in range(size) for j in range(size))
    return x * (1 + alpha * window / size ** 2) ** -beta


def test_lrn_across_and_within_channels(tmp_path):
    x = rand(2, 7, 5, 6)
    proto = input_layer("data", x.shape) + (
        'layer { name: "across" type: "LRN" bottom: "data" top: "across" '
        'lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 } }'
        'layer { name: "within" type: "LRN" bottom: "data" top: "within" '
        'lrn_param { local_size: 3 alpha: 0.4 beta: 0.6 norm_region: WITHIN_CHANNEL } }')
    y = run_net(tmp_path, proto, {}, {"data": x})
    np.testing.assert_allclose(y["across"], caffe_lrn_across(x, 5, 0.3, 0.75, 2.0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y["within"], caffe_lrn_within(x, 3, 0.4, 0.6), rtol=1e-4, atol=1e-6)


def test_v1_net_with_enum_types_and_output_selection(tmp_path):
    x, w, b = rand(1, 2, 4, 4), rand(3, 2, 1, 1), rand(3)
    proto = ('input: "data" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4\n'
             'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" convolution_param { num_output: 3 '
             'kernel_size: 1 } }\n'
             'layers { name: "relu" type: RELU bottom: "conv" top: "conv" }\n'
             'layers { name: "prob" type: SOFTMAX bottom: "conv" top: "prob" }\n')
    from caffe_netfiles import write_net
    from tensorkiln.importers.caffe import parse_caffe

    deploy, model = write_net(tmp_path, proto, {"conv": [w, b]}, v1=True)
    network = parse_caffe(deploy, model, outputs=["conv", "prob"], batch_size=3)
    assert [t.name for t in network.ir.outputs] == ["conv", "prob"] and network.ir.inputs[0].shape == (3, 2, 4, 4)
    import tensorkiln as tk

    feed = np.concatenate([x, x * 2, -x])
    y = tk.Builder().build(network).create_execution_context().execute({"data": feed})
    conv = np.maximum(np.einsum("nchw,kc->nkhw", feed, w[:, :, 0, 0]) + b.reshape(1, 3, 1, 1), 0)
    np.testing.assert_allclose(y["conv"], conv, rtol=1e-5, atol=1e-6)
    e = np.exp(conv - conv.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y["prob"], e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
