"""`kiln compare`: tables, exit codes (0 pass, 1 fail, 2 error), --layerwise naming the broken layer, and
--check-precision writing the file `kiln build --layer-precisions @FILE` reads."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import tensorkiln.runtime.context as context_module
from tensorkiln.cli.main import main
from tensorkiln.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the models tests/tools/ builds
import compare_models  # noqa: E402


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    return compare_models.export_small_cnn(tmp_path_factory.mktemp("cnn") / "small_cnn.onnx")


def test_passing_model_exits_0_with_its_tables(small_cnn, capsys):
    assert main(["compare", str(small_cnn), "--layerwise", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "random (seed 3)" in out and "onnxruntime, CPU provider" in out
    output_row = next(line for line in out.splitlines() if "probabilities" in line and "(1, 5)" in line)
    assert output_row.rstrip(" │").endswith("PASS")
    assert "layers, in execution order" in out and "fused_convolution" in out
    assert "every compared layer is within the tolerance" in out
    assert "PASSED: all 1 outputs within atol 0.0001, rtol 0.001" in out


def test_inputs_from_files(small_cnn, tmp_path, capsys):
    image = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", image=image)
    np.save(tmp_path / "image.npy", image)
    assert main(["compare", str(small_cnn), "--inputs-npz", str(tmp_path / "inputs.npz")]) == 0
    assert f"image: {tmp_path / 'inputs.npz'}" in capsys.readouterr().out
    assert main(["compare", str(small_cnn), "--inputs", f"image:{tmp_path / 'image.npy'}"]) == 0
    assert f"image: {tmp_path / 'image.npy'}" in capsys.readouterr().out


def test_broken_tactic_exits_1_and_is_named_first(small_cnn, tmp_path, monkeypatch, capsys):
    engine_path = tmp_path / "cnn.engine"
    assert main(["build", str(small_cnn), "-o", str(engine_path)]) == 0
    steps = Runtime().load(engine_path).plan.steps
    broken = next(step for step in steps[1:] if step.kind == "fused_convolution")  # the second convolution
    original, calls = context_module.kernel_for_tactic, itertools.count()

    def kernel_for_tactic(tactic, target):  # the broken step's kernel adds 1.0 to what it computes
        kernel = original(tactic, target)
        if next(calls) % len(steps) != steps.index(broken):
            return kernel
        return lambda op, args: [output + 1.0 for output in kernel(op, args)]

    monkeypatch.setattr(context_module, "kernel_for_tactic", kernel_for_tactic)
    capsys.readouterr()
    assert main(["compare", str(small_cnn), "--engine", str(engine_path), "--layerwise"]) == 1
    out = capsys.readouterr().out
    assert f"first layer past the tolerance: {broken.name} (fused_convolution" in out
    assert "FAILED: 1 of 1 outputs past atol 0.0001, rtol 0.001: probabilities" in out
    # a wide enough tolerance passes the same engine: the exit code follows the tolerance
    assert main(["compare", str(small_cnn), "--engine", str(engine_path), "--atol", "1e9"]) == 0


def test_check_precision_writes_the_file_kiln_build_reads(tmp_path, capsys, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # the file goes to the working directory, not beside the model
    model = tmp_path / "models" / "outlier.onnx"
    onnx.save(compare_models.int8_outlier_model(), model)
    calibration = tmp_path / "calibration.npy"  # 8 batches of the input's shape
    np.save(calibration, np.concatenate([np.random.default_rng(seed).standard_normal((1, 4, 8, 8)).astype(np.float32)
                                         for seed in range(8)]))
    int8 = ["--int8", "--calib", str(calibration), "--calibrator", "minmax"]
    tolerance = ["--atol", "0.2", "--rtol", "0.05"]
    precisions = tmp_path / "work" / "outlier.precisions.json"
    assert main(["compare", str(model), *int8, *tolerance, "--check-precision"]) == 1  # the engine as built fails
    out = capsys.readouterr().out
    assert "1 of 3 layers must stay in FP32" in out and "conv2.fused" in out
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["outlier.onnx"]
    document = json.loads(precisions.read_text())
    assert document["layers"] == {"conv2.fused": "fp32"} and document["precision"] == "int8"
    engine = tmp_path / "fixed.engine"
    assert main(["build", str(model), *int8, "--layer-precisions", f"@{precisions}", "-o", str(engine)]) == 0
    assert main(["compare", str(model), "--engine", str(engine), *tolerance]) == 0
    assert main(["compare", str(model), *int8, *tolerance, "--layer-precisions", "conv2.fused:fp32"]) == 0
    # precisions given for the build are written with the ones found
    assert main(["compare", str(model), *int8, *tolerance, "--layer-precisions", "conv3:fp32", "--check-precision",
                 "--precision-file", "both.json"]) == 1
    assert json.loads(Path("both.json").read_text())["layers"] == {"conv3": "fp32", "conv2.fused": "fp32"}


@pytest.mark.parametrize("arguments, message", [
    (["--engine", "x.engine", "--fp16"], "--engine takes an engine built before"),
    (["--check-precision"], "add --fp16, --bf16 or --int8"),
    (["--precision-file", "p.json"], "add --check-precision"),
    (["--layer-precisions", "conv2:fp32"], "does not have ('conv2')"),
    (["--layer-precisions", "conv2.fused:int4"], "not one of fp32"),
    (["--calib", "data.npy"], "add --int8"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, arguments, message):
    model = tmp_path / "outlier.onnx"
    onnx.save(compare_models.int8_outlier_model(), model)
    assert main(["compare", str(model), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and message in err and err.count("\n") == 1


def test_missing_model_exits_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
