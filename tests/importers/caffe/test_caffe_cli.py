"""`kiln build` with the giexec/trtexec flags: a Caffe net in, an engine out; --loadEngine; --allow-fallback."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh

import tensorkiln as tk
from tensorkiln.cli.main import main

LENET = "models/caffe/lenet_mnist"


def test_build_caffe_with_giexec_flags_then_load_engine(shared_dir, tmp_path, capsys):
    engine_path = tmp_path / "lenet.engine"
    base = shared_dir / LENET
    code = main(["build", "--deploy", str(base / "lenet.prototxt"),
                 "--model", str(base / "lenet_iter_10000.caffemodel"), "--output", "prob", "--batch", "2",
                 "--saveEngine", str(engine_path), "--iterations", "2", "--avgRuns", "1", "--workspace", "64",
                 "--verbose"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.count("Average over 1 runs is") == 2
    engine = tk.Runtime().load(engine_path)
    assert [(t.name, t.shape) for t in engine.outputs] == [("prob", (2, 10))]
    reference = np.load(base / "reference.npz")
    out = engine.create_execution_context().execute({"data": reference["input:data"][:2]})["prob"]
    np.testing.assert_allclose(out, reference["output:prob"][:2], rtol=1e-4, atol=1e-5)

    assert main(["build", "--loadEngine", str(engine_path), "--iterations", "1", "--avgRuns", "2"]) == 0
    assert "Average over 2 runs is" in capsys.readouterr().out


def test_build_flag_errors(shared_dir, tmp_path, capsys):
    base = shared_dir / LENET
    assert main(["build", "--deploy", str(base / "lenet.prototxt")]) == 2
    assert "--model NET.caffemodel" in capsys.readouterr().err
    assert main(["build", "--deploy", str(base / "lenet.prototxt"),
                 "--model", str(base / "lenet_iter_10000.caffemodel"), "--half2",
                 "-o", str(tmp_path / "x.engine")]) == 2
    assert "--fp16 is not supported on the CPU" in capsys.readouterr().err
    assert main(["build", "--model", str(base / "lenet_iter_10000.caffemodel")]) == 2
    assert "--deploy" in capsys.readouterr().err


def test_build_onnx_with_allow_fallback_lists_the_fallback_layer(tmp_path, capsys, monkeypatch):
    from tensorkiln.importers.onnx import parser

    original = parser.find_converter  # Hardmax stands in for an operator tensorkiln has no converter for
    monkeypatch.setattr(parser, "find_converter", lambda d, op: None if op == "Hardmax" else original(d, op))
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 4])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 4])
    model = oh.make_model(oh.make_graph([oh.make_node("Hardmax", ["x"], ["y"], name="hm")], "g", [x], [y]),
                          opset_imports=[oh.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert main(["build", str(path), "-o", str(tmp_path / "m.engine")]) == 2
    assert "--allow-fallback" in capsys.readouterr().err
    assert main(["build", str(path), "-o", str(tmp_path / "m.engine"), "--allow-fallback"]) == 0
    assert "fallback layer: hm (Hardmax)" in capsys.readouterr().out
    data = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    out = tk.Runtime().load(tmp_path / "m.engine").create_execution_context().execute({"x": data})["y"]
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32)[data.argmax(axis=1)])
