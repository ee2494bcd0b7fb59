"""The validator's other side: every engine a real build makes passes it. Cheap real models from the shared folder are
built, saved to a file, loaded through `Runtime().load` (which validates every field) and run against their stored
reference outputs; and every layer kind has an attribute check or a stated reason for none, so that a new layer kind
cannot silently make engines unloadable (check_op refuses a kind with neither)."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.ir.ops import OP_KINDS
from tensorkiln.plan import op_checks
from tensorkiln.plan.schema import plan_from_json
from tensorkiln.plan.validate import validate_plan


def _reference(path) -> tuple[dict, dict]:
    stored = np.load(path, allow_pickle=False)
    inputs = {key.split(":", 1)[1]: stored[key] for key in stored.files if key.startswith("input:")}
    outputs = {key.split(":", 1)[1]: stored[key] for key in stored.files if key.startswith("output:")}
    return inputs, outputs


def _lenet(shared, inputs):
    from tensorkiln.importers.caffe import parse_caffe

    base = shared / "models/caffe/lenet_mnist"
    return parse_caffe(base / "lenet.prototxt", base / "lenet_iter_10000.caffemodel",
                       input_shapes={name: value.shape for name, value in inputs.items()})


def _ultraface(shared, inputs):
    from tensorkiln.importers.onnx import parse_onnx

    return parse_onnx(shared / "models/onnx/ultraface/version-slim-320.onnx",
                      input_shapes={name: value.shape for name, value in inputs.items()})


MODELS = {  # name: (network maker, reference file, outputs compared (None: all))
    "lenet_caffe": (_lenet, "models/caffe/lenet_mnist/reference.npz", ["prob"]),
    "ultraface_onnx": (_ultraface, "models/onnx/ultraface/reference_version-slim-320.npz", None),
}


@pytest.mark.parametrize("model", MODELS)
def test_real_engines_pass_validation_and_run_after_loading(shared_dir, tmp_path, model):
    make_network, reference, compared = MODELS[model]
    inputs, expected = _reference(shared_dir / reference)
    built = tk.Builder().build(make_network(shared_dir, inputs))
    validate_plan(plan_from_json(built.plan.to_json()))  # the plan as the file holds it, checked field by field
    assert plan_from_json(built.plan.to_json()) == built.plan
    path = tmp_path / f"{model}.engine"
    built.save(path)
    engine = tk.Runtime().load(path)
    assert engine.plan == built.plan
    outputs = engine.create_execution_context().execute(inputs)
    for name in compared or expected:
        reference_output = expected[name]
        scale = max(float(np.max(np.abs(reference_output))), 1e-12)
        np.testing.assert_allclose(outputs[name], reference_output, rtol=0, atol=1e-4 * scale, err_msg=name)


def test_every_layer_kind_has_an_attribute_check_or_a_reason_for_none():
    kinds = set(OP_KINDS)
    checked, excused = set(op_checks.OP_CHECKS), set(op_checks.NO_OP_CHECK)
    assert not checked & excused
    assert kinds - checked - excused == set(), "give these layer kinds an @op_check or a needs_no_check reason"
    assert (checked | excused) - kinds == set()
    assert all(len(reason) > 20 for reason in op_checks.NO_OP_CHECK.values())


def test_a_layer_kind_without_a_check_is_refused(monkeypatch):
    """What the registry guards against: a kind with neither a check nor a reason cannot be loaded."""
    from tensorkiln.ir.ops import Softmax
    from tensorkiln.plan.schema import PlanProblem

    monkeypatch.delitem(op_checks.OP_CHECKS, Softmax.KIND)
    with pytest.raises(PlanProblem, match="layer kind 'softmax' has no attribute check"):
        op_checks.check_op(Softmax(axis=-1), ())


def test_a_kind_cannot_be_registered_twice():
    from tensorkiln.ir.ops import Softmax

    with pytest.raises(ValueError, match="two attribute checks"):
        op_checks.needs_no_check("a second registration", Softmax)
