"""kiln build shows the build log's warnings without --verbose (one `kiln: warning:` line each on stderr)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tensorkiln.cli.main import main


def _conv_model(path):
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())


def test_entropy_calibration_on_few_samples_warns_without_verbose(tmp_path, capsys):
    _conv_model(tmp_path / "conv.onnx")
    np.save(tmp_path / "calib.npy", np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    assert main(["build", str(tmp_path / "conv.onnx"), "--int8", "--calib", str(tmp_path / "calib.npy"),
                 "--calibrator", "entropy", "-o", str(tmp_path / "conv.engine")]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("kiln: warning: entropy calibration")]
    assert len(warnings) == 1 and "4 samples" in warnings[0], captured.err
    assert "[build]" not in captured.out  # the rest of the log stays behind --verbose
