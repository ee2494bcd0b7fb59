"""Optimization profiles from the command line (issue 20): kiln build --minShapes/--optShapes/--maxShapes, kiln
inspect's profile table, kiln run/bench --shapes and --profile, and the one-line errors."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from tensorkiln.cli.main import main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """Conv + Relu + global average pool + Flatten on an image of any batch, height and width."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", 1, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", 1, ["n", 4])], weights)
    path = tmp_path_factory.mktemp("cli_profiles") / "pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def engine_path(model_path):
    engine = model_path.with_suffix(".engine")
    assert main(["build", str(model_path), "-o", str(engine), "--minShapes", "x:1x3x4x4", "--optShapes",
                 "x:2x3x8x8", "--maxShapes", "x:4x3x16x16", "--minShapes", "x:8x3x4x4", "--maxShapes",
                 "x:16x3x4x4"]) == 0
    return engine


def test_inspect_shows_every_profile(engine_path, capsys):
    assert main(["inspect", str(engine_path)]) == 0
    out = capsys.readouterr().out
    assert "optimization profiles" in out and "1x3x4x4" in out and "2x3x8x8" in out and "4x3x16x16" in out
    assert "16x3x4x4" in out and "built ahead" in out and "format version     │ 2" in out


def test_run_any_shape_of_a_profile_and_compare(engine_path, model_path, tmp_path, capsys):
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    assert main(["run", str(engine_path), "--shapes", "x:3x3x5x9", "--save-inputs", str(inputs),
                 "--save-outputs", str(outputs)]) == 0
    feed = dict(np.load(inputs))
    assert feed["x"].shape == (3, 3, 5, 9)
    [expected] = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_allclose(np.load(outputs)["y"], expected, rtol=1e-5, atol=1e-6)
    assert main(["run", str(engine_path), "--profile", "1", "--shapes", "x:12x3x4x4"]) == 0
    assert main(["bench", str(engine_path), "--shapes", "x:4x3x16x16", "--iterations", "3"]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--shapes", "x:5x3x8x8"], "outside min 1x3x4x4 opt 2x3x8x8 max 4x3x16x16 of optimization profile 0"),
    (["--shapes", "x:12x3x4x4"], "select profile 1"),
    (["--profile", "2"], "the engine has profiles 0 to 1"),
    (["--shapes", "y:1x4"], "which profile 0 does not vary"),
])
def test_out_of_range_is_one_line(engine_path, capsys, flags, message):
    assert main(["run", str(engine_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_profile_flag_errors(model_path, tmp_path, capsys):
    out = str(tmp_path / "bad.engine")
    assert main(["build", str(model_path), "-o", out, "--minShapes", "x:4x3x4x4", "--maxShapes", "x:2x3x4x4"]) == 2
    assert "does not hold dim by dim" in capsys.readouterr().err
    assert main(["build", str(model_path), "-o", out, "--shapes", "x:1x3x4x4", "--optShapes", "x:1x3x4x4"]) == 2
    assert "--shapes fixes the shapes" in capsys.readouterr().err
    fixed = str(tmp_path / "fixed.engine")
    assert main(["build", str(model_path), "-o", fixed, "--shapes", "x:1x3x4x4"]) == 0
    assert main(["run", fixed, "--shapes", "x:2x3x4x4"]) == 2
    assert "built for the fixed shape 1x3x4x4" in capsys.readouterr().err
