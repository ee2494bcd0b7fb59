"""INT8 engines on the CPU: simulated INT8 numerics against a hand-written reference, the accuracy tools, LeNet's
accuracy on MNIST, and `kiln build --int8`."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tensorkiln as tk
from tensorkiln.cli.main import main
from tensorkiln.quant.calibrate import SENSITIVITY_BATCHES
from tensorkiln.quant.calibrator import DataCalibrator
from tensorkiln.quant.int8 import Int8Options
from tensorkiln.quant.precision import Precision


def _two_convs(rng):
    """x -> conv_a (3x3) -> relu -> conv_b (1x1) -> fully connected (4 outputs)."""
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (2, 3, 7, 7))
    a = network.add_convolution(x, 6, (3, 3), rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
                                rng.standard_normal(6).astype(np.float32), padding=1, name="conv_a")
    relu = network.add_activation(a.get_output(0), tk.ActivationType.RELU, name="relu_a")
    b = network.add_convolution(relu.get_output(0), 5, (1, 1), rng.standard_normal((5, 6, 1, 1)).astype(np.float32),
                                None, name="conv_b")
    fc = network.add_fully_connected(b.get_output(0), 4, rng.standard_normal((4, 5 * 7 * 7)).astype(np.float32),
                                     rng.standard_normal(4).astype(np.float32), name="fc")
    network.mark_output(fc.get_output(0))
    return network


def _fake_quant(x: torch.Tensor, amax: float) -> torch.Tensor:
    scale = np.float32(amax / 127)
    return torch.clamp(torch.round(x / scale), -128, 127) * scale


def _per_channel(w: np.ndarray) -> torch.Tensor:
    w = torch.from_numpy(w)
    scale = w.abs().reshape(len(w), -1).amax(1).reshape((-1,) + (1,) * (w.dim() - 1)) / 127
    return torch.round(w / scale) * scale


def test_int8_engine_is_quantize_dequantize_around_each_weighted_layer():
    rng = np.random.default_rng(0)
    network = _two_convs(rng)
    weights = {layer.name: [None if t is None else t.value for t in layer.inputs[1:3]]
               for layer in network.ir.layers}
    data = [rng.standard_normal((2, 3, 7, 7)).astype(np.float32) for _ in range(3)]
    config = tk.BuilderConfig(precision=Precision.INT8, int8=Int8Options(DataCalibrator(data, "minmax")))
    engine = tk.Builder(config).build(network)
    counts = engine.plan.build_info["pass_counts"]
    assert counts["quantize_int8.quantized"] == 3 and engine.plan.precision == "int8"
    # each input's quantize/dequantize is one fused pointwise step (the network has no other pointwise layer)
    assert [s.kind for s in engine.plan.steps].count("fused_pointwise") == 3

    # the reference: FP32 layers by hand, each weighted layer reading fake-quantized inputs (minmax: the largest
    # |x| over the calibration data, computed here in FP32) with per-channel fake-quantized weights
    def forward(x, quantize):
        def layer(inp, name, op, amax):
            w, bias = weights[name]
            w = _per_channel(w) if quantize else torch.from_numpy(w)
            inp = _fake_quant(inp, amax) if quantize else inp
            return op(inp, w, None if bias is None else torch.from_numpy(bias))
        a = torch.relu(layer(x, "conv_a", lambda i, w, b: F.conv2d(i, w, b, padding=1), amaxes[0]))
        b = layer(a, "conv_b", F.conv2d, amaxes[1])
        return layer(b.flatten(1), "fc", F.linear, amaxes[2])

    amaxes = [0.0, 0.0, 0.0]
    stats = [[], [], []]
    for batch in data:
        x = torch.from_numpy(batch)
        a = torch.relu(F.conv2d(x, torch.from_numpy(weights["conv_a"][0]), torch.from_numpy(weights["conv_a"][1]),
                                padding=1))
        b = F.conv2d(a, torch.from_numpy(weights["conv_b"][0]))
        for i, value in enumerate((x, a, b)):
            stats[i].append(float(value.abs().max()))
    amaxes = [max(s) for s in stats]
    feed = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    expected = forward(torch.from_numpy(feed), quantize=True).numpy()
    (got,) = engine.create_execution_context().execute({"x": feed}).values()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    float_output = forward(torch.from_numpy(feed), quantize=False).numpy()
    assert np.abs(got - float_output).max() > 1e-3  # the quantization is really there


def _two_branches(rng):
    """x -> conv_a -> out_a; y -> conv_b -> relu -> fc -> out_b (two inputs, two outputs)."""
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (2, 3, 7, 7))
    y = network.add_input("y", tk.DataType.FLOAT, (2, 3, 7, 7))
    a = network.add_convolution(x, 4, (3, 3), rng.standard_normal((4, 3, 3, 3)).astype(np.float32), name="conv_a")
    b = network.add_convolution(y, 4, (3, 3), rng.standard_normal((4, 3, 3, 3)).astype(np.float32), name="conv_b")
    relu = network.add_activation(b.get_output(0), tk.ActivationType.RELU, name="relu_b")
    fc = network.add_fully_connected(relu.get_output(0), 3, rng.standard_normal((3, 4 * 5 * 5)).astype(np.float32),
                                     name="fc")
    network.mark_output(a.get_output(0))
    network.mark_output(fc.get_output(0))
    return network


def test_sqnr_log_and_keep_the_most_sensitive_layer():
    rng = np.random.default_rng(1)
    # one calibration sample of x holds a huge outlier: minmax then stretches conv_a's input scale until most
    # values round to zero, so conv_a is by far the most sensitive layer (the SQNR is measured on the first
    # SENSITIVITY_BATCHES batches, the outlier comes after them)
    data = [{"x": rng.standard_normal((2, 3, 7, 7)).astype(np.float32),
             "y": rng.standard_normal((2, 3, 7, 7)).astype(np.float32)} for _ in range(SENSITIVITY_BATCHES + 1)]
    data[-1]["x"][0, 0, 0, 0] = 2000.0
    config = tk.BuilderConfig(precision=Precision.INT8,
                              int8=Int8Options(DataCalibrator(data, "minmax"), keep_float=1, measure_sqnr=True))
    builder = tk.Builder(config)
    engine = builder.build(_two_branches(rng))
    lines = [line for line in builder.build_log if line.startswith("int8 ")]
    # conv_b and its ReLU are one fused layer by now, named after conv_b
    assert [line.split(":")[0].removesuffix(".fused") for line in lines] == ["int8 conv_a", "int8 conv_b", "int8 fc"]
    assert "kept in float" in lines[0] and all("kept in float" not in line for line in lines[1:])
    network_sqnr = [float(line.split("dB (layer), ")[1].split(" dB")[0]) for line in lines]
    assert network_sqnr[0] < 10 < min(network_sqnr[1:])
    counts = engine.plan.build_info["pass_counts"]
    assert counts["quantize_int8.quantized"] == 2 and counts["quantize_int8.kept_float"] == 1
    conv_a = next(s for s in engine.plan.steps if s.name.startswith("conv_a"))
    assert conv_a.inputs[0] == "x"  # reads the input itself, not a dequantized copy


def _mnist(shared_dir):
    with gzip.open(shared_dir / "datasets" / "mnist_5k" / "mnist_5k.csv.gz") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 1, 28, 28) * np.float32(1 / 256), table[:, -1].astype(np.int64)


@pytest.mark.parametrize("calibrator", ["entropy", "percentile"])
def test_lenet_int8_accuracy_on_mnist(shared_dir, calibrator):
    """Calibrated on the first 500 digits of mnist_5k, >= 99.6% top-1 on the other 4,500 (FP32: 99.78%)."""
    from tensorkiln.importers.caffe import parse_caffe

    pixels, labels = _mnist(shared_dir)
    base = shared_dir / "models" / "caffe" / "lenet_mnist"
    network = parse_caffe(base / "lenet.prototxt", base / "lenet_iter_10000.caffemodel", outputs=["prob"],
                          batch_size=500)
    config = tk.BuilderConfig(precision=Precision.INT8, int8=Int8Options(DataCalibrator([pixels[:500]], calibrator)))
    context = tk.Builder(config).build(network).create_execution_context()
    predictions = np.concatenate([context.execute({"data": pixels[i: i + 500]})["prob"].argmax(axis=1)
                                  for i in range(500, 5000, 500)])
    accuracy = float(np.mean(predictions == labels[500:]))
    assert accuracy >= 0.996, accuracy


def test_kiln_build_int8_then_rebuild_from_the_cache(shared_dir, tmp_path, capsys):
    pixels, _ = _mnist(shared_dir)
    calib = tmp_path / "calib.npy"
    np.save(calib, pixels[:40])
    base = shared_dir / "models" / "caffe" / "lenet_mnist"
    model = ["--deploy", str(base / "lenet.prototxt"), "--model", str(base / "lenet_iter_10000.caffemodel"),
             "--output", "prob", "--batch", "8", "--int8"]
    cache = tmp_path / "lenet.cache"
    assert main(["build", *model, "--calib", str(calib), "--calib-cache", str(cache), "--calib-batches", "3",
                 "--calibrator", "mse", "-v", "-o", str(tmp_path / "a.engine")]) == 0
    printed = capsys.readouterr().out
    assert "calibrated 9 tensors on 3 batches (mse)" in printed and "quantize_int8.quantized=4" in printed
    assert "int8 ip2.fused: SQNR" in printed
    assert cache.read_text().startswith("TRT-8601-MSECalibration\ndata: ")
    assert main(["build", *model, "--calibrator", "mse", "--calib-cache", str(cache), "-o",
                 str(tmp_path / "b.engine")]) == 0
    assert "quantize_int8.quantized=4" in capsys.readouterr().out
    feed = {"data": pixels[100:108]}
    runtime = tk.Runtime()
    first, second = (runtime.load(tmp_path / name).create_execution_context().execute(feed)["prob"]
                     for name in ("a.engine", "b.engine"))
    # the same scales; each build's tactic timer may pick oneDNN's INT8 kernel or the float one per layer, which
    # agree to FP32 rounding, not to the bit
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--calib", "x.npy"], "apply to INT8 builds: add --int8"),
    (["--int8"], "--int8 needs calibration data (--calib DIR|FILE) or an existing calibration cache"),
    (["--int8", "--fp16"], "--fp16 is not supported on the CPU target yet"),
    (["--int8", "--calib", "x.npy", "--calib-preprocess", "size=3"], "--calib-preprocess: unknown preprocessing key"),
])
def test_kiln_build_int8_flag_errors(tmp_path, capsys, flags, message):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # never read: the flags are checked first
    assert main(["build", str(model), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("groups, quantized", [(1, 1), (2, 0)])
def test_deconvolution_weights_per_output_channel(groups, quantized):
    rng = np.random.default_rng(6)
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (1, 4, 5, 5))
    weights = rng.standard_normal((4, 6 // groups, 3, 3)).astype(np.float32)
    weights[:, 0] *= 50  # output channel 0 much larger: per-tensor weight scales would wipe out the others
    deconv = network.add_deconvolution(x, 6, (3, 3), weights, None, stride=2, groups=groups, name="deconv")
    network.mark_output(deconv.get_output(0))
    data = [rng.standard_normal((1, 4, 5, 5)).astype(np.float32) for _ in range(2)]
    config = tk.BuilderConfig(precision=Precision.INT8, int8=Int8Options(DataCalibrator(data, "minmax")))
    engine = tk.Builder(config).build(network)
    assert engine.plan.build_info["pass_counts"].get("quantize_int8.quantized", 0) == quantized
    feed = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    (got,) = engine.create_execution_context().execute({"x": feed}).values()
    w = torch.from_numpy(weights)
    if quantized:  # per output channel (axis 1 of [C, K, kh, kw]), the input at max |x| of the calibration data
        scale = w.abs().amax(dim=(0, 2, 3), keepdim=True) / 127
        w = torch.round(w / scale) * scale
        inputs = _fake_quant(torch.from_numpy(feed), max(float(np.abs(d).max()) for d in data))
    else:
        inputs = torch.from_numpy(feed)
    expected = F.conv_transpose2d(inputs, w, stride=2, groups=groups).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
