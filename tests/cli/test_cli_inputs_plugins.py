"""Issue 18's CLI findings: `kiln build --input-values`, `--plugins` on build/run/bench/inspect, a warning for each
flag the CPU target ignores, and a prototxt given as the ONNX model. Each test fails at dcd7bd3, where the flags
did not exist (argparse: "unrecognized arguments", exit code 2) or the prototxt met the ONNX parser."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.cli.input_values import parse_input_values
from tensorkiln.cli.inputs import CommandLineError
from tensorkiln.cli.main import main
from tensorkiln.cli.plugins import FILE_MODULE_PREFIX
from tensorkiln.errors import InputError
from tensorkiln.plugins import find_plugin, unregister_plugin

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

PLUGIN_TYPE = "KilnTestScaledTanh"  # a name no other test registers
GAIN = 2.5
PLUGIN_SOURCE = textwrap.dedent(f"""
    import dataclasses
    from tensorkiln.plugins import Plugin, register_plugin

    @register_plugin("{PLUGIN_TYPE}")
    class ScaledTanh(Plugin):
        @dataclasses.dataclass(frozen=True)
        class Params:
            gain: float = 1.0

        def output_specs(self, inputs):
            return [inputs[0]]

        def forward(self, inputs):
            return [inputs[0].tanh() * self.params.gain]
""")


def _one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("kiln: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def _save(graph, path, extra_opsets=()):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *extra_opsets], ir_version=8)
    onnx.save(model, path)
    return path


def _reshape_model(path):
    """y = relu(reshape(x, shape)): the input `shape` selects the output's shape, so it must be fixed at build."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["y"])], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return _save(graph, path)


def _plugin_model(path, with_shape_input=False):
    """y = ScaledTanh(relu(x)), the plugin a node of a custom domain (and optionally a Reshape by an input)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node(PLUGIN_TYPE, ["r"], ["t"], domain="com.example", gain=GAIN)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])]
    if with_shape_input:
        nodes.append(helper.make_node("Reshape", ["t", "shape"], ["y"]))
        inputs.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    else:
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "custom", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return _save(graph, path, [helper.make_opsetid("com.example", 1)])


def _expected_plugin_output(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.maximum(x, 0)) * GAIN


@pytest.fixture
def plugin_file(tmp_path):
    """The plugin's source in a file of its own; afterwards the registration and the imported module are gone."""
    path = tmp_path / "my_layers.py"
    path.write_text(PLUGIN_SOURCE)
    yield path
    unregister_plugin(PLUGIN_TYPE)
    for name in [n for n in sys.modules if n.startswith(FILE_MODULE_PREFIX) or n == "my_layers"]:
        del sys.modules[name]


# ---- --input-values --------------------------------------------------------------------------------
DECLARED = {"sr": (np.dtype("int64"), ()), "axes": (np.dtype("int64"), (None,)), "x:0": (np.dtype("float32"), (1,)),
            "flag": (np.dtype("bool"), ()), "small": (np.dtype("int8"), ())}


def test_parse_input_values_takes_the_declared_dtype_and_shape():
    values = parse_input_values("sr:16000,axes:0,1,x:0:2.5,flag:true", DECLARED)
    assert values["sr"].dtype == np.int64 and values["sr"].shape == () and values["sr"] == 16000
    np.testing.assert_array_equal(values["axes"], np.array([0, 1], np.int64))
    assert values["x:0"].dtype == np.float32 and values["x:0"].shape == (1,)  # a number fills a declared (1,)
    assert values["flag"].dtype == np.bool_ and bool(values["flag"])
    np.testing.assert_array_equal(parse_input_values("axes:0x1x2", DECLARED)["axes"], [0, 1, 2])


@pytest.mark.parametrize("text, error, fragment", [
    ("sr:1.5", CommandLineError, "not an integer"),
    ("rate:16000", CommandLineError, "not an input of the model"),
    ("sr:", CommandLineError, "write a number"),
    ("sr:1,sr:2", CommandLineError, "twice"),
    ("small:300", CommandLineError, "outside the range of int8"),
    ("flag:maybe", CommandLineError, "boolean"),
    ("x:0:1,2", InputError, "does not match the model's declared 1"),
])
def test_parse_input_values_rejects_clearly(text, error, fragment):
    with pytest.raises(error, match=fragment):
        parse_input_values(text, DECLARED)


def test_input_values_from_npy_files(tmp_path):
    np.save(tmp_path / "axes.npy", np.array([2, 3], np.int32))  # an integer kind converts to the declared int64
    values = parse_input_values(f"axes:{tmp_path / 'axes.npy'}", DECLARED)
    assert values["axes"].dtype == np.int64 and values["axes"].tolist() == [2, 3]
    np.save(tmp_path / "float.npy", np.array([2.0]))
    with pytest.raises(InputError, match="dtype float64, but the model declares int64"):
        parse_input_values(f"axes:{tmp_path / 'float.npy'}", DECLARED)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot read"):  # never unpickled
        parse_input_values(f"axes:{tmp_path / 'objects.npy'}", DECLARED)


@pytest.mark.parametrize("form", ["text", "npy"])
def test_build_with_input_values_matches_onnxruntime(form, tmp_path, capsys):
    model = _reshape_model(tmp_path / "reshape.onnx")
    shape = np.array([2, 6], np.int64)
    np.save(tmp_path / "shape.npy", shape)
    value = "2x6" if form == "text" else str(tmp_path / "shape.npy")
    engine = tmp_path / "reshape.engine"
    assert main(["build", str(model), "-o", str(engine), "--input-values", f"shape:{value}"]) == 0
    assert "(2, 6)" in capsys.readouterr().out
    assert [spec.name for spec in tk.Runtime().load(engine).inputs] == ["x"]  # `shape` is fixed, no longer an input

    x = np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = tmp_path / "y.npz"
    assert main(["run", str(engine), "--inputs", f"x:{tmp_path / 'x.npy'}", "--save-outputs", str(outputs)]) == 0
    (expected,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x,
                                                                                                    "shape": shape})
    np.testing.assert_array_equal(np.load(outputs)["y"], expected)


def test_build_without_the_value_says_how_to_give_it(tmp_path, capsys):
    model = _reshape_model(tmp_path / "reshape.onnx")
    assert main(["build", str(model), "--input-values", "shap:2x6"]) == 2
    _one_line_error(capsys.readouterr().err, "'shap' is not an input", "['shape', 'x']")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('name: "n"\n')
    assert main(["build", "--deploy", str(prototxt), "--model", "w.caffemodel", "--input-values", "a:1"]) == 2
    _one_line_error(capsys.readouterr().err, "--input-values applies to ONNX models")


def test_silero_vad_builds_from_the_cli_with_sr_fixed(shared_dir, tmp_path, capsys):
    """silero_vad's `sr` picks a branch of its If nodes: only the Python API could fix it before."""
    folder = shared_dir / "models" / "onnx" / "silero_vad"
    engine = tmp_path / "silero.engine"
    assert main(["build", str(folder / "silero_vad.onnx"), "-o", str(engine), "--shapes",
                 "input:1x512,state:2x1x128", "--input-values", "sr:16000"]) == 0
    capsys.readouterr()
    reference = np.load(folder / "reference_silero_vad.npz")
    assert int(reference["input:sr"]) == 16000
    np.savez(tmp_path / "feed.npz", input=reference["input:input"], state=reference["input:state"])
    outputs = tmp_path / "out.npz"
    assert main(["run", str(engine), "--inputs", str(tmp_path / "feed.npz"), "--save-outputs", str(outputs)]) == 0
    saved = np.load(outputs)  # against onnxruntime's outputs, stored with the model
    np.testing.assert_allclose(saved["output"], reference["output:output"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(saved["stateN"], reference["output:stateN"], rtol=1e-4, atol=1e-5)


# ---- --plugins -------------------------------------------------------------------------------------
def test_plugins_on_build_run_bench_inspect(plugin_file, tmp_path, capsys):
    model = _plugin_model(tmp_path / "custom.onnx")
    engine = tmp_path / "custom.engine"
    assert main(["build", str(model), "-o", str(engine)]) == 2  # not registered: fails, and says how to fix it
    _one_line_error(capsys.readouterr().err, PLUGIN_TYPE)
    assert main(["build", str(model), "-o", str(engine), "--plugins", str(plugin_file)]) == 0
    unregister_plugin(PLUGIN_TYPE)  # as a new `kiln run` process would start: without the plugin
    for name in [n for n in sys.modules if n.startswith(FILE_MODULE_PREFIX)]:
        del sys.modules[name]
    assert main(["run", str(engine)]) == 2
    _one_line_error(capsys.readouterr().err, "not registered", "--plugins")

    x = np.random.default_rng(1).standard_normal((3, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = tmp_path / "y.npz"
    assert main(["run", str(engine), "--plugins", str(plugin_file), "--inputs", f"x:{tmp_path / 'x.npy'}",
                 "--save-outputs", str(outputs)]) == 0
    np.testing.assert_allclose(np.load(outputs)["y"], _expected_plugin_output(x), rtol=1e-6, atol=1e-6)
    # the same file again in this process (a second --plugins, or a later command) imports it once
    assert main(["bench", str(engine), "--plugins", str(plugin_file), "--plugins", str(plugin_file),
                 "--iterations", "3", "--warmup", "1"]) == 0
    assert main(["inspect", str(engine), "--plugins", str(plugin_file), "--layers"]) == 0
    out = capsys.readouterr().out
    assert "inferences/s" in out and "cpu.plugin.torch" in out


def test_plugins_by_module_name(plugin_file, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(plugin_file.parent))
    model = _plugin_model(tmp_path / "custom.onnx")
    assert main(["build", str(model), "-o", str(tmp_path / "custom.engine"), "--plugins", "my_layers"]) == 0
    assert find_plugin(PLUGIN_TYPE) is not None


def test_plugins_errors_are_one_line(tmp_path, monkeypatch, capsys):
    engine_args = ["inspect", str(tmp_path / "missing.engine")]
    assert main([*engine_args, "--plugins", str(tmp_path / "nope.py")]) == 2
    _one_line_error(capsys.readouterr().err, "nope.py: no such file")
    assert main([*engine_args, "--plugins", "no_such_module_for_kiln"]) == 2
    _one_line_error(capsys.readouterr().err, "no module named 'no_such_module_for_kiln'")
    broken = tmp_path / "broken.py"
    broken.write_text("import math\nraise RuntimeError('plugin setup failed')\n")
    assert main([*engine_args, "--plugins", str(broken)]) == 2
    _one_line_error(capsys.readouterr().err, "RuntimeError: plugin setup failed", f"python3 {broken}")
    assert not any(name.startswith(FILE_MODULE_PREFIX + "broken") for name in sys.modules)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local_layers.py").write_text("")
    assert main([*engine_args, "--plugins", "local_layers"]) == 2  # a file here, named as a module: say so
    _one_line_error(capsys.readouterr().err, "--plugins ./local_layers.py")


# ---- warnings for flags the target ignores ---------------------------------------------------------
@pytest.mark.parametrize("flags, warned", [
    (["--timing-cache", "{dir}/cache.json"], ["--timing-cache"]),
    (["--opt-level", "1"], ["--opt-level"]),
    (["--tactic-sources=-cudnn,-cublaslt"], ["--tactic-sources"]),
    (["--opt-level", "5", "--timing-cache", "{dir}/cache.json"], ["--timing-cache", "--opt-level"]),
    ([], []),
])
def test_build_warns_of_flags_the_cpu_target_ignores(flags, warned, tmp_path, capsys):
    model = _reshape_model(tmp_path / "reshape.onnx")
    flags = [flag.format(dir=tmp_path) for flag in flags]
    assert main(["build", str(model), "--input-values", "shape:4x3", *flags]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(warned), lines
    for line, flag in zip(lines, warned):
        assert line.startswith(f"kiln: warning: {flag} does nothing on the CPU target"), line


def test_bench_warns_that_host_io_does_nothing_on_the_cpu(tmp_path, capsys):
    model = _reshape_model(tmp_path / "reshape.onnx")
    engine = tmp_path / "reshape.engine"
    assert main(["build", str(model), "-o", str(engine), "--input-values", "shape:4x3"]) == 0
    capsys.readouterr()
    assert main(["bench", str(engine), "--host-io", "--iterations", "2", "--warmup", "1"]) == 0
    assert capsys.readouterr().err.startswith("kiln: warning: --host-io does nothing for a CPU engine")


# ---- a Caffe file given as the ONNX model -----------------------------------------------------------
PROTOTXT = 'name: "tiny"\ninput: "data"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 4\ninput_dim: 4\n' \
           'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n'


@pytest.mark.parametrize("file_name, fragments", [
    ("tiny.prototxt", ["tiny.prototxt is a Caffe net definition", "--deploy", "tiny.caffemodel"]),
    ("deploy.txt", ["deploy.txt is a Caffe net definition", "--deploy", "tiny.caffemodel"]),  # by its content
    ("tiny.caffemodel", ["Caffe model's weights", "--deploy", "--model"]),
])
def test_caffe_file_given_as_onnx_model_says_use_deploy(file_name, fragments, tmp_path, capsys):
    (tmp_path / "tiny.caffemodel").write_bytes(b"\x0a\x04tiny")
    path = tmp_path / file_name
    if not path.exists():
        path.write_text(PROTOTXT)
    for args in (["build", str(path)], ["build", f"--onnx={path}"]):
        assert main(args) == 2
        _one_line_error(capsys.readouterr().err, *fragments)


# ---- the same, once as a real `kiln` process ---------------------------------------------------------
def _kiln(*args: str, cwd) -> subprocess.CompletedProcess:
    script = shutil.which("kiln")
    command = [script] if script else [sys.executable, "-m", "tensorkiln.cli.main"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_kiln_process_input_values_plugins_warning_and_prototxt(plugin_file, tmp_path):
    model = _plugin_model(tmp_path / "custom.onnx", with_shape_input=True)
    built = _kiln("build", str(model), "-o", "custom.engine", "--plugins", str(plugin_file),
                  "--input-values", "shape:2x6", "--opt-level", "2", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert built.stderr.startswith("kiln: warning: --opt-level does nothing") and built.stderr.count("\n") == 1
    x = np.random.default_rng(2).standard_normal((3, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    ran = _kiln("run", "custom.engine", "--plugins", "./my_layers.py", "--inputs", "x:x.npy",
                "--save-outputs", "y.npz", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["y"], _expected_plugin_output(x).reshape(2, 6),
                               rtol=1e-6, atol=1e-6)
    (tmp_path / "lenet.prototxt").write_text(PROTOTXT)
    refused = _kiln("build", "lenet.prototxt", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    _one_line_error(refused.stderr, "lenet.prototxt is a Caffe net definition", "--deploy lenet.prototxt")
