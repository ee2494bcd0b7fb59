"""The calibration cache: TensorRT's text layout, round trips, bad files, and a rebuild from the cache alone."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.errors import BuildError
from tensorkiln.quant.cache import format_cache, hex_to_float, parse_cache
from tensorkiln.quant.calibrator import DataCalibrator
from tensorkiln.quant.int8 import Int8Options
from tensorkiln.quant.precision import Precision


def test_layout_is_tensorrts():
    text = format_cache("entropy", {"data": 1 / 127, "conv1/relu": 0.5})
    # 1/127 is the scale TensorRT caches for an input in [-1, 1]: 3c010204 in its files
    assert text == "TRT-8601-EntropyCalibration2\ndata: 3c010204\nconv1/relu: 3f000000\n"
    assert parse_cache(text) == ("entropy", {"data": np.float32(1 / 127), "conv1/relu": 0.5})
    assert hex_to_float("3c010204") == np.float32(1 / 127)


@pytest.mark.parametrize("algorithm", ["entropy", "minmax", "percentile", "mse"])
def test_round_trip_every_algorithm(algorithm):
    scales = {"a": float(np.float32(0.0123)), "b:with:colons": float(np.float32(3.5e-5))}
    assert parse_cache(format_cache(algorithm, scales)) == (algorithm, scales)


def test_a_tensorrt_written_cache_is_read():
    text = "TRT-8001-EntropyCalibration2\ninput.1: 3c010a14\n(Unnamed Layer* 2) [Activation]_output: 3d9a1a5f\n"
    algorithm, scales = parse_cache(text)
    assert algorithm == "entropy" and set(scales) == {"input.1", "(Unnamed Layer* 2) [Activation]_output"}


@pytest.mark.parametrize("text, message", [
    ("", "first line should name the calibrator"),
    ("TRT-8601-LegacyCalibration\nx: 3c010204\n", "first line should name the calibrator"),
    ("TRT-8601-MinMaxCalibration\nx 3c010204\n", "line 2"),
    ("TRT-8601-MinMaxCalibration\nx: zz\n", "line 2"),
    ("TRT-8601-MinMaxCalibration\nx: 3c010204\ny: ff800000\n", "line 3"),  # -inf
])
def test_bad_cache_is_one_clear_error(text, message):
    with pytest.raises(BuildError, match=message):
        parse_cache(text)


def _conv_network(seed: int = 0):
    rng = np.random.default_rng(seed)
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (2, 3, 9, 9))
    conv = network.add_convolution(x, 5, (3, 3), rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
                                   rng.standard_normal(5).astype(np.float32), name="conv")
    relu = network.add_activation(conv.get_output(0), tk.ActivationType.RELU, name="relu")
    network.mark_output(relu.get_output(0))
    return network


def _build(calibrator, network=None):
    config = tk.BuilderConfig(precision=Precision.INT8, int8=Int8Options(calibrator))
    return tk.Builder(config).build(network or _conv_network())


def test_rebuild_from_the_cache_alone_gives_the_same_engine(tmp_path):
    rng = np.random.default_rng(1)
    data = [rng.standard_normal((2, 3, 9, 9)).astype(np.float32) for _ in range(4)]
    cache = tmp_path / "calib.cache"
    first = _build(DataCalibrator(data, "percentile", cache_path=cache))
    assert cache.read_text().startswith("TRT-8601-PercentileCalibration\n")
    second = _build(DataCalibrator(None, "percentile", cache_path=cache))  # no data: the cache must serve
    feed = {"x": rng.standard_normal((2, 3, 9, 9)).astype(np.float32)}
    out1 = first.create_execution_context().execute(feed)
    out2 = second.create_execution_context().execute(feed)
    (name,) = out1
    scales = [[step.op.int8_input_scale for step in engine.plan.steps if getattr(step.op, "int8_input_scale", 0.0)]
              for engine in (first, second)]
    assert scales[0] == scales[1] and len(scales[0]) == 1  # the same scale, to the bit
    # each build's tactic timer may pick oneDNN's INT8 kernel or the float one: they agree to FP32 rounding
    np.testing.assert_allclose(out1[name], out2[name], rtol=1e-5, atol=1e-6)
    assert second.plan.build_info["pass_counts"]["quantize_int8.quantized"] == 1


def test_cache_of_another_calibrator_without_data_is_an_error(tmp_path):
    cache = tmp_path / "calib.cache"
    cache.write_text(format_cache("minmax", {"x": 0.01}))
    with pytest.raises(BuildError, match="needs data or a calibration cache"):
        _build(DataCalibrator(None, "entropy", cache_path=cache))


def test_no_calibrator_and_no_data_are_clear_errors():
    with pytest.raises(BuildError, match="needs a calibrator"):
        tk.Builder(tk.BuilderConfig(precision=Precision.INT8)).build(_conv_network())
    with pytest.raises(BuildError, match="needs data or a calibration cache"):
        _build(DataCalibrator(None))
    with pytest.raises(BuildError, match="gave no batch"):
        _build(DataCalibrator([np.zeros((1, 3, 9, 9), np.float32)]))  # less than one batch of 2


def test_a_calibrator_written_as_tensorrts_interface():
    """A user's own Int8Calibrator: batches until None, the cache asked for first and handed over after."""
    from tensorkiln.quant.calibrator import Int8Calibrator

    class Batches(Int8Calibrator):
        algorithm = "minmax"

        def __init__(self):
            self.calls, self.written = [], None
            self.batches = iter([np.full((2, 3, 9, 9), v, np.float32) for v in (0.5, -2.0, 1.0)])

        def get_batch(self, inputs):
            self.calls.append(("get_batch", tuple(inputs)))
            batch = next(self.batches, None)
            return None if batch is None else {"x": batch}

        def read_calibration_cache(self):
            self.calls.append(("read",))
            return None

        def write_calibration_cache(self, cache):
            self.calls.append(("write",))
            self.written = cache

    calibrator = Batches()
    _build(calibrator)
    assert calibrator.calls[0] == ("read",) and calibrator.calls[-1] == ("write",)
    assert calibrator.calls[1] == ("get_batch", (("x", (2, 3, 9, 9)),)) and len(calibrator.calls) == 6
    algorithm, scales = parse_cache(calibrator.written)
    assert algorithm == "minmax" and scales["x"] == np.float32(2.0 / 127)  # the largest |x| of the three batches


def test_runner_frees_tensors_after_their_last_reader():
    from tensorkiln.quant.observe import NetworkRunner

    network = _conv_network().ir
    seen = []
    feed = {"x": np.ones((2, 3, 9, 9), np.float32)}
    kept = NetworkRunner(network).run(feed, lambda tensor, value: seen.append(tensor.name), keep_all=False)
    everything = NetworkRunner(network).run(feed)
    assert set(kept) == {t.name for t in network.outputs} and len(everything) == len(seen) >= 3
    for name, value in kept.items():
        np.testing.assert_array_equal(value.numpy(), everything[name].numpy())


def test_entropy_on_few_samples_warns():
    rng = np.random.default_rng(2)
    data = [rng.standard_normal((2, 3, 9, 9)).astype(np.float32) for _ in range(3)]
    builder = tk.Builder(tk.BuilderConfig(precision=Precision.INT8, int8=Int8Options(DataCalibrator(data))))
    builder.build(_conv_network())
    assert any(line.startswith("warning: entropy calibration on 6 samples") for line in builder.build_log)
    builder = tk.Builder(tk.BuilderConfig(precision=Precision.INT8, int8=Int8Options(DataCalibrator(data, "minmax"))))
    builder.build(_conv_network())
    assert not any(line.startswith("warning") for line in builder.build_log)
