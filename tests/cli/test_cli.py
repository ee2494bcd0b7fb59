"""The `kiln` command: build, run, bench, inspect, help, and clear one-line errors (exit code 2)."""
from __future__ import annotations

import argparse
import importlib
import json

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.cli.inputs import CommandLineError, RANDOM_INT_HIGH, parse_shapes, random_value
from tensorkiln.cli.main import SUBCOMMANDS, main, make_parser
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation
from tensorkiln.plan import TensorSpec

BATCH = 2


def _has_parse_onnx() -> bool:
    try:
        return hasattr(importlib.import_module("tensorkiln.importers.onnx"), "parse_onnx")
    except ImportError:
        return False


needs_parse_onnx = pytest.mark.skipif(not _has_parse_onnx(),
                                      reason="tensorkiln.importers.onnx.parse_onnx is not there yet")


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory):
    """conv -> relu on a float image, plus an int32 offset cast to float and added: two inputs of two dtypes."""
    rng = np.random.default_rng(1)
    network = tk.NetworkDefinition("cli_net")
    image = network.add_input("image", tk.DataType.FLOAT, (BATCH, 3, 6, 6), dim_names=("batch", None, None, None))
    offset = network.add_input("offset", tk.DataType.INT32, (6,))
    conv = network.add_convolution(image, 4, (3, 3), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4),
                                   padding=1, name="conv")
    relu = network.add_activation(conv.get_output(0), ActivationType.RELU, name="relu")
    shift = network.add_cast(offset, tk.DataType.FLOAT, name="cast")
    total = network.add_elementwise(relu.get_output(0), shift.get_output(0), ElementWiseOperation.SUM, name="add")
    network.mark_output(total.get_output(0))
    network.mark_output(relu.get_output(0))
    path = tmp_path_factory.mktemp("engines") / "cli_net.engine"
    tk.Builder().build(network).save(path)
    return path


def _execute(engine_path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return tk.Runtime().load(engine_path).create_execution_context().execute(feed)


def _assert_one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---- help and version ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["build", "run", "bench", "inspect", "demo"])
def test_help_of_each_subcommand_explains_every_flag(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: kiln {command}" in capsys.readouterr().out
    subparsers = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in subparsers.choices[command]._actions:
        assert action.help, f"kiln {command}: {action.option_strings or action.dest} has no help"


def test_version_and_top_level_help(capsys):
    assert main(["--version"]) == 0
    assert tk.__version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"    {command.name}  " in out for command in SUBCOMMANDS)


# ---- run ------------------------------------------------------------------------------------------
def test_run_on_random_inputs_matches_python_execution(engine_path, tmp_path, capsys):
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    assert main(["run", str(engine_path), "--seed", "5", "--save-inputs", str(inputs),
                 "--save-outputs", str(outputs)]) == 0
    out = capsys.readouterr().out
    assert "random (seed 5)" in out and "add_output_0" in out and "relu_output_0" in out
    feed = dict(np.load(inputs))
    assert feed["image"].dtype == np.float32 and np.all(feed["image"] != 0)
    assert feed["offset"].dtype == np.int32 and feed["offset"].min() >= 0 and feed["offset"].max() < RANDOM_INT_HIGH
    expected = _execute(engine_path, feed)
    saved = np.load(outputs)
    assert sorted(saved.files) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(saved[name], value)
    # the statistics printed are those of the output
    assert f"{float(expected['relu_output_0'].max()):.6g}" in out


def test_run_same_seed_same_inputs(engine_path, tmp_path, capsys):
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path in paths:
        assert main(["run", str(engine_path), "--seed", "3", "--save-inputs", str(path)]) == 0
    first, second = np.load(paths[0]), np.load(paths[1])
    np.testing.assert_array_equal(first["image"], second["image"])


def test_run_with_npy_and_npz_inputs(engine_path, tmp_path, capsys):
    rng = np.random.default_rng(7)
    feed = {"image": rng.standard_normal((BATCH, 3, 6, 6), dtype=np.float32),
            "offset": np.arange(6, dtype=np.int32)}
    expected = _execute(engine_path, feed)
    np.save(tmp_path / "image.npy", feed["image"])
    np.save(tmp_path / "offset.npy", feed["offset"])
    np.savez(tmp_path / "feed.npz", **feed)
    for inputs in ([f"image:{tmp_path / 'image.npy'},offset:{tmp_path / 'offset.npy'}"],
                   [f"image:{tmp_path / 'image.npy'}", "--inputs", f"offset:{tmp_path / 'offset.npy'}"],
                   [str(tmp_path / "feed.npz")]):
        outputs = tmp_path / "outputs.npz"
        assert main(["run", str(engine_path), "--inputs", *inputs, "--save-outputs", str(outputs)]) == 0
        saved = np.load(outputs)
        for name, value in expected.items():
            np.testing.assert_array_equal(saved[name], value)
    assert "image.npy" in capsys.readouterr().out


def test_run_converts_float64_files_but_not_other_kinds(engine_path, tmp_path, capsys):
    image = np.random.default_rng(0).standard_normal((BATCH, 3, 6, 6))
    np.save(tmp_path / "image64.npy", image)
    assert main(["run", str(engine_path), "--inputs", f"image:{tmp_path / 'image64.npy'}"]) == 0
    assert "float64 -> float32" in capsys.readouterr().out
    np.save(tmp_path / "image_int.npy", image.astype(np.int64))
    assert main(["run", str(engine_path), "--inputs", f"image:{tmp_path / 'image_int.npy'}"]) == 2
    _assert_one_line_error(capsys, "dtype int64", "expects float32")


def test_run_rejects_wrong_input_shape_clearly(engine_path, tmp_path, capsys):
    np.save(tmp_path / "image.npy", np.ones((1, 3, 6, 6), np.float32))
    assert main(["run", str(engine_path), "--inputs", f"image:{tmp_path / 'image.npy'}"]) == 2
    _assert_one_line_error(capsys, "'image'", "shape 1x3x6x6", "expects 2x3x6x6", "--shapes image:1x3x6x6")


@pytest.mark.parametrize("inputs, fragments", [
    ("nope:{dir}/image.npy", ["no input 'nope'", "['image', 'offset']"]),
    ("image:{dir}/missing.npy", ["missing.npy", "does not exist"]),
    ("{dir}/image.npy", ["say which input it is"]),
])
def test_run_rejects_bad_inputs_arguments(engine_path, tmp_path, capsys, inputs, fragments):
    np.save(tmp_path / "image.npy", np.ones((BATCH, 3, 6, 6), np.float32))
    assert main(["run", str(engine_path), "--inputs", inputs.format(dir=tmp_path)]) == 2
    _assert_one_line_error(capsys, *fragments)


# ---- bench ----------------------------------------------------------------------------------------
def test_bench_writes_sane_figures(engine_path, tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", str(engine_path), "--iterations", "20", "--warmup", "2", "--threads", "1",
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "inferences/s" in out and "items/s" in out and "p99" in out
    figures = json.loads(report.read_text())
    assert figures["iterations"] == 20 and figures["warmup_iterations"] == 2 and figures["threads"] == 1
    assert figures["batch"] == BATCH and figures["target"] == "cpu" and figures["io"] == "host"
    latency = figures["latency_ms"]
    assert set(latency) >= {"min", "mean", "median", "p90", "p95", "p99", "max"}
    ordered = [latency[key] for key in ("min", "median", "p90", "p95", "p99", "max")]
    assert 0 < ordered[0] and ordered == sorted(ordered) and latency["min"] <= latency["mean"] <= latency["max"]
    assert figures["total_seconds"] >= 20 * latency["min"] / 1000
    inferences = figures["throughput_inferences_per_second"]
    assert inferences == pytest.approx(20 / figures["total_seconds"])
    assert figures["throughput_items_per_second"] == pytest.approx(BATCH * inferences)


def test_bench_dump_profile_times_every_layer(engine_path, tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", str(engine_path), "--iterations", "3", "--warmup-ms", "0", "--dump-profile",
                 "--json", str(report)]) == 0
    assert "per-layer profile" in capsys.readouterr().out
    profile = json.loads(report.read_text())["profile"]
    steps = tk.Runtime().load(engine_path).plan.steps
    assert [entry["name"] for entry in profile] == [step.name for step in steps]
    assert all(entry["median_ms"] >= 0 for entry in profile)


def test_bench_rejects_conflicting_warmups(engine_path, capsys):
    assert main(["bench", str(engine_path), "--warmup", "1", "--warmup-ms", "5"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


# ---- inspect --------------------------------------------------------------------------------------
def test_inspect_shows_io_and_engine_facts(engine_path, capsys):
    assert main(["inspect", str(engine_path)]) == 0
    out = capsys.readouterr().out
    for fragment in ("image", "offset", "input", "output", f"(batch={BATCH}, 3, 6, 6)", "int32", "cpu", "fp32",
                     "format version", tk.__version__, "weights", "activations", "fold_constants"):
        assert fragment in out, fragment
    assert "cpu.convolution" not in out  # layers only with --layers


def test_inspect_layers_lists_steps(engine_path, capsys):
    assert main(["inspect", str(engine_path), "--layers"]) == 0
    out = capsys.readouterr().out
    plan = tk.Runtime().load(engine_path).plan
    for step in plan.steps:
        assert step.name in out and step.tactic in out
    assert "(2, 4, 6, 6)" in out


# ---- bad engine files -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "bench", "inspect"])
def test_missing_engine_file_is_one_line_error(command, tmp_path, capsys):
    assert main([command, str(tmp_path / "missing.engine")]) == 2
    _assert_one_line_error(capsys, "missing.engine", "does not exist")


@pytest.mark.parametrize("command", ["run", "bench", "inspect"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_engine_file_is_one_line_error(command, damage, engine_path, tmp_path, capsys):
    blob = engine_path.read_bytes()
    if damage == "garbage":
        blob = b"definitely not an engine"
    elif damage == "truncated":
        blob = blob[:len(blob) // 2]
    else:
        blob = blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:]
    bad = tmp_path / "bad.engine"
    bad.write_bytes(blob)
    assert main([command, str(bad)]) == 2
    _assert_one_line_error(capsys, "bad.engine")


# ---- shared parsing -------------------------------------------------------------------------------
def test_parse_tactic_sources():
    from tensorkiln.cli.build import parse_tactic_sources

    assert parse_tactic_sources("-CUDNN,+CUBLAS_LT") == ("cudnn",)  # trtexec's spelling
    assert parse_tactic_sources("-cublas, -triton") == ("cublaslt", "triton")
    assert parse_tactic_sources("-triton,+triton") == () == parse_tactic_sources(None)  # the last word counts


def test_parse_shapes():
    assert parse_shapes("input:1x3x224x224,other:1x10") == {"input": (1, 3, 224, 224), "other": (1, 10)}
    assert parse_shapes("input_1:0:2X5") == {"input_1:0": (2, 5)}  # TensorFlow-style names keep their colon
    assert parse_shapes("scalar:") == {"scalar": ()}
    assert parse_shapes(None) == {}
    for bad in ("1x3x224", "x:1xAx3", "x:1x-1", "x:1,x:2"):
        with pytest.raises(CommandLineError):
            parse_shapes(bad)


def test_random_values_are_never_all_zero():
    rng = np.random.default_rng(0)
    flags = random_value(TensorSpec("flags", tk.DataType.BOOL, (64,)), rng)
    assert flags.dtype == np.bool_ and flags.any() and not flags.all()
    ids = random_value(TensorSpec("ids", tk.DataType.INT64, (64,)), rng)
    assert ids.dtype == np.int64 and ids.any() and ids.min() >= 0 and ids.max() < RANDOM_INT_HIGH


# ---- build ----------------------------------------------------------------------------------------
def _conv_relu_model(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 7, 7])], [weight, bias])
    # ir_version pinned: an onnxruntime older than the onnx package may not read the newest one
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


@needs_parse_onnx
def test_build_then_run_matches_onnxruntime(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    model = _conv_relu_model(tmp_path / "conv_relu.onnx")
    engine = tmp_path / "conv_relu.engine"
    dumps = tmp_path / "passes"
    assert main(["build", str(model), "-o", str(engine), "--shapes", "x:3x3x7x7", "--verbose",
                 "--dump-passes", str(dumps), "--debug"]) == 0
    out = capsys.readouterr().out
    assert "build summary" in out and "[build] pass fold_constants" in out and "(N=3, 3, 7, 7)" in out
    assert engine.is_file() and any(dumps.iterdir())

    x = np.random.default_rng(4).standard_normal((3, 3, 7, 7), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = tmp_path / "y.npz"
    assert main(["run", str(engine), "--inputs", f"x:{tmp_path / 'x.npy'}", "--save-outputs", str(outputs)]) == 0
    (expected,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(np.load(outputs)["y"], expected, rtol=1e-5, atol=1e-5)


@needs_parse_onnx
def test_build_accepts_trtexec_spellings(tmp_path, capsys):
    model = _conv_relu_model(tmp_path / "conv_relu.onnx")
    engine = tmp_path / "out" / "model.engine"
    assert main(["build", f"--onnx={model}", f"--saveEngine={engine}"]) == 0
    assert engine.is_file()
    assert "(N=1, 3, 7, 7)" in capsys.readouterr().out  # a dynamic batch dimension defaults to 1


@needs_parse_onnx
@pytest.mark.parametrize("flag", ["--fp16", "--bf16", "--best"])  # --int8 runs on the CPU: tests/quant
def test_build_rejects_reduced_precision_on_cpu(flag, tmp_path, capsys):
    model = _conv_relu_model(tmp_path / "conv_relu.onnx")
    assert main(["build", str(model), flag]) == 2
    _assert_one_line_error(capsys, flag, "not supported on the CPU target yet")
    assert not (tmp_path / "conv_relu.engine").exists()


@needs_parse_onnx
@pytest.mark.parametrize("args, fragments", [
    (["{dir}/missing.onnx"], ["missing.onnx", "does not exist"]),
    (["{dir}/conv_relu.onnx", "--shapes", "z:1x3x7x7"], ["'z'", "not inputs of the model"]),
    (["{dir}/conv_relu.onnx", "--shapes", "x:1x3"], ["rank"]),
    ([], ["no model given"]),
    (["{dir}/conv_relu.onnx", "--tacticSources=-JIT_CONVOLUTIONS"], ["unknown source 'jit_convolutions'", "cudnn"]),
    (["{dir}/conv_relu.onnx", "--tactic-sources=-torch"], ["kernels from torch only", "--tactic-sources=+torch"]),
    (["{dir}/conv_relu.onnx", "--passes=+fold_bias"], ["--passes", "unknown pass 'fold_bias'"]),
])
def test_build_errors_are_one_line(args, fragments, tmp_path, capsys):
    _conv_relu_model(tmp_path / "conv_relu.onnx")
    assert main(["build", *(a.format(dir=tmp_path) for a in args)]) == 2
    _assert_one_line_error(capsys, *fragments)


@pytest.mark.gpu
@needs_parse_onnx
def test_cuda_fp16_engine_end_to_end(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    model = _conv_relu_model(tmp_path / "conv_relu.onnx")
    engine = tmp_path / "conv_relu.engine"
    assert main(["build", str(model), "-o", str(engine), "--device", "cuda", "--fp16", "--shapes", "x:2x3x7x7"]) == 0
    assert main(["inspect", str(engine), "--layers"]) == 0
    out = capsys.readouterr().out
    assert "cuda (" in out and "fp16" in out and "compute capability" in out

    x = np.random.default_rng(4).standard_normal((2, 3, 7, 7), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = tmp_path / "y.npz"
    assert main(["run", str(engine), "--inputs", f"x:{tmp_path / 'x.npy'}", "--save-outputs", str(outputs)]) == 0
    (expected,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(np.load(outputs)["y"], expected, rtol=1e-2, atol=1e-2)

    for io_flags, io in (([], "device"), (["--host-io"], "host")):
        report = tmp_path / "bench.json"
        assert main(["bench", str(engine), "--iterations", "10", "--warmup", "2", "--dump-profile",
                     "--json", str(report), *io_flags]) == 0
        figures = json.loads(report.read_text())
        assert figures["io"] == io and figures["target"] == "cuda" and figures["iterations"] == 10
        steps = tk.Runtime().load(engine).num_layers  # conv and ReLU fuse into one step
        assert len(figures["profile"]) == steps and figures["latency_ms"]["min"] > 0
