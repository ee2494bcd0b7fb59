"""Bad input, end to end: a truncated or foreign .onnx, unsupported operators, a wrong input shape, a corrupt
engine file. Each must fail with tensorkiln's own error naming the problem and the fix (from Python), and
as one line on stderr with exit code 2 (from `kiln`), never with a traceback from deep inside a library.

Other files hold neighbouring cases: tests/plan/test_engine_file.py (engine round trip, checksum, format
version), tests/runtime/test_execution_context.py (missing and unknown inputs, dtypes) and
tests/cli/test_cli.py (the CLI's one-line errors for missing files and bad --inputs)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.cli.main import main
from tensorkiln.errors import (EngineFormatError, InputError, ModelFormatError, ShapeError, TensorkilnError,
                               UnsupportedOpError)
from tensorkiln.importers.onnx import parse_onnx


def _conv_relu(batch="N") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["y"])]
    graph = helper.make_graph(nodes, "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 [batch, 3, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---- a truncated or foreign .onnx ------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.9])
def test_truncated_onnx_file(fraction, tmp_path, capsys):
    blob = _conv_relu().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(blob[:int(len(blob) * fraction)])
    with pytest.raises(ModelFormatError, match="cut.onnx.*(truncated or corrupt)"):
        parse_onnx(path)
    assert main(["build", str(path), "-o", str(tmp_path / "cut.engine")]) == 2
    _one_line_error(capsys, "cut.onnx", "truncated or corrupt")
    assert not (tmp_path / "cut.engine").exists()


def test_every_truncation_of_an_onnx_file_fails_with_a_tensorkiln_error():
    blob = _conv_relu().SerializeToString()
    unexpected, accepted = [], []
    for cut in range(len(blob)):
        try:
            parse_onnx(blob[:cut])
        except TensorkilnError:
            continue
        except Exception as error:  # noqa: BLE001 (the point: anything else is a traceback from deep inside)
            unexpected.append(f"{cut}: {type(error).__name__}: {error}")
        else:
            if onnx.load_from_string(blob[:cut]).opset_import:  # the cut that drops only opset_import: see below
                accepted.append(cut)
    assert not unexpected, f"{len(unexpected)} truncations raised other errors: {unexpected[:5]}"
    assert not accepted, f"truncations at bytes {accepted} of {len(blob)} were accepted as models"


def test_a_model_without_opset_import_is_rejected():
    model = _conv_relu()
    del model.opset_import[:]
    with pytest.raises(ModelFormatError, match="opset"):
        parse_onnx(model)


def test_a_model_of_another_domain_only_needs_no_default_opset():
    # a scikit-learn export (ai.onnx.ml only, as ../shared/models/onnx/ort_tiny/logreg_iris.onnx): no default opset to
    # know, so the error is the usual one naming each unsupported operator, its node and the domain's opset
    node = helper.make_node("Normalizer", ["x"], ["y"], name="norm", domain="ai.onnx.ml", norm="L2")
    graph = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    with pytest.raises(UnsupportedOpError, match=r"\(ai.onnx.ml opset 1\).*Normalizer \(domain ai.onnx.ml\) at node 'norm'"):
        parse_onnx(model)


def test_a_file_that_is_not_onnx(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(ModelFormatError, match="model.onnx"):
        parse_onnx(path)
    assert main(["build", str(path)]) == 2
    _one_line_error(capsys, "model.onnx")


# ---- unsupported operators ----------------------------------------------------------------------------
def _model_with_unsupported_ops() -> onnx.ModelProto:
    branch = helper.make_graph([helper.make_node("Frobnicate", ["a"], ["branch_out"], name="inner")], "branch", [],
                               [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [2, 3])])
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Frobnicate", ["a"], ["b"], name="first"),
             helper.make_node("Gizmo", ["b"], ["c"], name="second", domain="com.example"),
             helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch)]
    graph = helper.make_graph(nodes, "unsupported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                                     helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])


def test_unsupported_ops_are_all_listed_at_once(tmp_path, capsys):
    with pytest.raises(UnsupportedOpError) as caught:
        parse_onnx(_model_with_unsupported_ops())
    message = str(caught.value)
    for fragment in ("opset 17", "Frobnicate at node 'first'", "Gizmo (domain com.example) at node 'second'",
                     "at node 'inner'", "['Frobnicate', 'Gizmo']"):
        assert fragment in message, message
    assert caught.value.__cause__ is None
    path = tmp_path / "unsupported.onnx"
    onnx.save(_model_with_unsupported_ops(), str(path))
    assert main(["build", str(path)]) == 2
    _one_line_error(capsys, "Frobnicate", "Gizmo", "'first'", "'second'")


# ---- a wrong input shape ------------------------------------------------------------------------------
def test_wrong_shapes_at_build_time(tmp_path, capsys):
    with pytest.raises(ShapeError, match="'x' has rank 4.*\\(1, 3\\).*rank 2"):
        parse_onnx(_conv_relu(), input_shapes={"x": (1, 3)})
    with pytest.raises(ShapeError, match="'z'.*not inputs of the model.*\\['x'\\]"):
        parse_onnx(_conv_relu(), input_shapes={"z": (1, 3, 7, 7)})
    with pytest.raises(ShapeError, match="x.*dynamic dimension 2.*--shapes x:"):
        model = _conv_relu()
        model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
        parse_onnx(model)
    with pytest.raises(TensorkilnError, match="Conv"):  # 2 channels where the weights want 3: the node is named
        parse_onnx(_conv_relu(), input_shapes={"x": (1, 2, 7, 7)})


@pytest.mark.parametrize("shape", [(1, 3, 7, 8), (2, 3, 7, 7), (3, 7, 7), (1, 3, 7, 7, 1)])
def test_wrong_shape_at_run_time(shape, tmp_path, capsys):
    engine = tk.Builder().build(parse_onnx(_conv_relu(), input_shapes={"x": (1, 3, 7, 7)}))
    context = engine.create_execution_context()
    given = np.ones(shape, np.float32)
    with pytest.raises(InputError, match="'x'.*shape.*built for \\(1, 3, 7, 7\\)"):
        context.execute({"x": given})
    path = tmp_path / "conv.engine"
    engine.save(path)
    np.save(tmp_path / "x.npy", given)
    assert main(["run", str(path), "--inputs", f"x:{tmp_path / 'x.npy'}"]) == 2
    _one_line_error(capsys, "'x'", "x".join(str(d) for d in shape))


# ---- a corrupt engine file ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine_blob() -> bytes:
    return tk.Builder().build(parse_onnx(_conv_relu(), input_shapes={"x": (1, 3, 7, 7)})).serialize()


@pytest.mark.parametrize("where", ["length", "header", "plan", "weights", "tail"])
def test_corrupt_engine_file(where, engine_blob, tmp_path, capsys):
    blob = bytearray(engine_blob)
    header_end = 8 + int.from_bytes(blob[:8], "little")
    plan_at = engine_blob.index(b'"plan"')
    position = {"length": 3, "header": 12, "plan": plan_at + 40, "weights": header_end + 5, "tail": len(blob) - 1}
    blob[position[where]] ^= 0x5A
    with pytest.raises(EngineFormatError, match="rebuild the engine"):
        tk.Runtime().deserialize(bytes(blob))
    path = tmp_path / "corrupt.engine"
    path.write_bytes(bytes(blob))
    assert main(["run", str(path)]) == 2
    _one_line_error(capsys, "corrupt.engine")


def test_every_corrupted_byte_of_an_engine_gives_an_engine_format_error(engine_blob):
    feed = {"x": np.ones((1, 3, 7, 7), np.float32)}
    unexpected = []
    for position in range(len(engine_blob)):
        blob = bytearray(engine_blob)
        blob[position] ^= 0x5A
        try:
            tk.Runtime().deserialize(bytes(blob)).create_execution_context().execute(feed)
        except TensorkilnError:
            continue
        except Exception as error:  # noqa: BLE001
            unexpected.append(f"byte {position}: {type(error).__name__}: {error}")
    assert not unexpected, f"{len(unexpected)} corruptions raised other errors: {unexpected[:5]}"
