"""The plan validator on issue 18's findings: engine files whose header or plan was edited (and re-sealed: the checksum
matches) used to end in a traceback, a hang or a crash. Each is one EngineFormatError that names the field, through
`Runtime().load` (the API the README documents), and `kiln run` exits with code 2 and one line on stderr."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Callable

import pytest
from plan_editing import (conv_engine, edited, join_engine, plan_of, pointwise_engine, reseal, split_engine,
                          step_named, step_of_kind, tensor_spec, zoo_engine)

import tensorkiln as tk
from tensorkiln.cli.main import main as kiln_main
from tensorkiln.errors import EngineFormatError


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    return {"conv": conv_engine().serialize(), "zoo": zoo_engine().serialize(),
            "pointwise": pointwise_engine().serialize()}


# ---- edits: each returns the edited engine file ------------------------------------------------------------------
BlobEdit = Callable[[bytes], bytes]


def plan_edit(edit: Callable[[dict], object]) -> BlobEdit:
    return lambda blob: edited(blob, edit)


def header_edit(edit: Callable[[dict], object]) -> BlobEdit:
    """An edit of the safetensors header (not the plan): the checksum does not cover it."""
    def apply(blob: bytes) -> bytes:
        header, data = split_engine(blob)
        edit(header)
        return join_engine(header, data)
    return apply


def step_attr(kind: str, name: str, value) -> BlobEdit:
    def edit(plan: dict) -> None:
        step_of_kind(plan, kind)["op"]["attrs"][name] = value
    return plan_edit(edit)


def step_field(kind: str, name: str, value) -> BlobEdit:
    def edit(plan: dict) -> None:
        step_of_kind(plan, kind)[name] = value
    return plan_edit(edit)


def plan_field(name: str, value) -> BlobEdit:
    return plan_edit(lambda plan: plan.__setitem__(name, value))


def _nested_header(blob: bytes) -> bytes:
    return join_engine({}, split_engine(blob)[1], header_text="[" * 200_000)


def _missing_step_input(plan: dict) -> None:
    step_of_kind(plan, "pooling")["inputs"][0] = "nowhere"


def _reordered_steps(plan: dict) -> None:
    plan["steps"].reverse()


def _undeclared_step_output(plan: dict) -> None:
    step_of_kind(plan, "pad")["outputs"] = ["ghost"]


def _undeclared_plan_output(plan: dict) -> None:
    plan["outputs"].append({**plan["outputs"][0], "name": "ghost"})


def _no_steps(plan: dict) -> None:
    plan["steps"] = []


def _no_steps_nor_tensors(plan: dict) -> None:
    plan["steps"], plan["tensors"], plan["memory"] = [], [], None


def _step_writes_an_input(plan: dict) -> None:
    step_of_kind(plan, "pooling")["outputs"] = ["x"]


def _step_writes_a_weight(plan: dict) -> None:
    step_of_kind(plan, "pooling")["outputs"] = [plan["weights"][0]["name"]]


def _duplicate_tensor(plan: dict) -> None:
    plan["tensors"].append(dict(plan["tensors"][0]))


def _duplicate_step_name(plan: dict) -> None:
    plan["steps"][1]["name"] = plan["steps"][0]["name"]


def _two_steps_write_one_tensor(plan: dict) -> None:
    step_of_kind(plan, "slice")["outputs"] = step_of_kind(plan, "pooling")["outputs"]


def _declared_tensor_shape(plan: dict) -> None:
    tensor_spec(plan, step_of_kind(plan, "slice")["outputs"][0])["shape"] = [1, 4, 4, 3]


def _memory_arena(plan: dict) -> None:
    plan["memory"]["arena_bytes"] -= 64


def _memory_overlap(plan: dict) -> None:
    offsets = plan["memory"]["offsets"]
    pooled = step_of_kind(plan, "pooling")["outputs"][0]
    offsets[pooled] = offsets[step_of_kind(plan, "fused_convolution")["outputs"][0]]  # both live at the slice


def _huge_pads_consistently(memory: str, pads: int = 100_000) -> Callable[[dict], None]:
    """Pads of 100000 (or `pads`) with every shape after them edited to match (the issue's 641 GB per tensor): only
    size limits bound this plan. `memory`: "none" (no memory plan: each tensor allocated), "recomputed" (a
    consistent one)."""
    def edit(plan: dict) -> None:
        step_of_kind(plan, "fused_convolution")["op"]["attrs"]["pads"] = [pads] * 4
        for spec in (*plan["tensors"], *plan["outputs"]):
            spec["shape"] = [1, 4, 9 + 2 * pads - 2, 7 + 2 * pads - 2]
        plan["memory"] = None
        if memory == "recomputed":
            from tensorkiln.plan.memory import plan_memory
            from tensorkiln.plan.schema import plan_from_json

            parsed = plan_from_json(plan)
            plan["memory"] = plan_memory(parsed.steps, parsed.tensors, {t.name for t in parsed.outputs}).to_json()
    return edit


def _conv_bias_is_its_weight(plan: dict) -> None:
    step = step_of_kind(plan, "fused_convolution")
    step["inputs"][2] = step["inputs"][1]


def _other_kinds_tactic(plan: dict) -> None:
    step_of_kind(plan, "fused_convolution")["tactic"] = "cpu.pooling.torch"


def _residual_in_place_without_residual(plan: dict) -> None:
    step_of_kind(plan, "fused_convolution")["op"]["attrs"]["residual_in_place"] = True


# (id, engine, edit, words the message must hold): words name the field and say what is wrong with it
CASES = [
    # the header and its metadata
    ("header_200k_nested_brackets", "conv", _nested_header, "unreadable header"),
    ("metadata_extra_int", "conv", header_edit(lambda h: h["__metadata__"].__setitem__("extra", 5)),
     "metadata is not a map of strings to strings"),
    ("plan_200k_nested_brackets", "conv", lambda blob: reseal(blob, "[" * 200_000), "plan that is not readable JSON"),
    ("plan_not_an_object", "conv", lambda blob: reseal(blob, "[1, 2]"), "the plan must be an object"),
    ("plan_unknown_key", "conv", plan_field("eval", "1"), "unknown keys ['eval']"),
    # plan fields
    ("precision_int3", "conv", plan_field("precision", "int3"), "plan precision 'int3' is not one of"),
    ("step_precision_int3", "zoo", step_field("softmax", "precision", "int3"), "precision 'int3' is not one of"),
    ("build_info_list", "conv", plan_field("build_info", [1, 2]), "plan 'build_info' must be an object"),
    ("build_info_deep", "conv", plan_field("build_info", {"x": json.loads("[" * 40 + "]" * 40)}),
     "nested at most"),
    ("target_tpu", "conv", plan_field("target", "tpu"), "plan target 'tpu' is not one of cpu, cuda"),
    ("compute_capability_text", "conv", plan_field("compute_capability", "8.9; rm -rf"),
     "compute_capability '8.9; rm -rf' is not of the form MAJOR.MINOR"),
    ("input_dtype_unknown", "conv", plan_edit(lambda p: p["inputs"][0].__setitem__("dtype", "float128")),
     "tensor 'x': dtype 'float128' is not one of"),
    ("input_dim_negative", "conv", plan_edit(lambda p: p["inputs"][0].__setitem__("shape", [1, 3, -9, 7])),
     "tensor 'x': shape"),
    ("input_dim_bool", "conv", plan_edit(lambda p: p["inputs"][0].__setitem__("shape", [True, 3, 9, 7])),
     "tensor 'x': shape"),
    ("input_dim_huge", "conv", plan_edit(lambda p: p["inputs"][0].__setitem__("shape", [2**50, 3, 9, 7])),
     "tensor 'x': shape"),
    ("name_with_newline", "conv", plan_edit(lambda p: p["steps"][0].__setitem__("name", "a\nkiln: ok")),
     "without control characters"),
    ("duplicate_tensor", "zoo", plan_edit(_duplicate_tensor), "is declared twice"),
    ("duplicate_step_name", "zoo", plan_edit(_duplicate_step_name), "is declared twice"),
    # tactics
    ("tactic_without_dots", "conv", step_field("fused_convolution", "tactic", "cputorch"),
     "tactic id 'cputorch' is not of the form <target>.<layer kind>.<implementation>"),
    ("tactic_of_other_layer_kind", "conv", plan_edit(_other_kinds_tactic),
     "tactic 'cpu.pooling.torch' is for pooling layers, not fused_convolution"),
    ("tactic_unregistered", "conv", step_field("fused_convolution", "tactic", "cpu.fused_convolution.mine"),
     "tactic 'cpu.fused_convolution.mine' names no registered cpu kernel"),
    ("tactic_of_cuda_on_cpu", "conv", step_field("fused_convolution", "tactic", "cuda.fused_convolution.torch"),
     "is a cuda tactic in an engine built for cpu"),
    # the steps' order, inputs and outputs
    ("missing_step_input", "zoo", plan_edit(_missing_step_input), "reads 'nowhere' before any step produces it"),
    ("reordered_steps", "zoo", plan_edit(_reordered_steps), "before any step produces it"),
    ("undeclared_step_output", "zoo", plan_edit(_undeclared_step_output),
     "writes 'ghost', which the plan's tensors do not declare"),
    ("undeclared_plan_output", "zoo", plan_edit(_undeclared_plan_output), "output 'ghost' is produced by no step"),
    ("no_steps", "zoo", plan_edit(_no_steps), "are declared, but no step produces them"),
    ("no_steps_nor_tensors", "zoo", plan_edit(_no_steps_nor_tensors), "output 'pad_output_0' is produced by no step"),
    ("step_writes_an_input", "zoo", plan_edit(_step_writes_an_input), "writes 'x', which is already an engine input"),
    ("step_writes_a_weight", "zoo", plan_edit(_step_writes_a_weight), "which is already an engine input, a weight"),
    ("two_steps_write_one_tensor", "zoo", plan_edit(_two_steps_write_one_tensor), "earlier step's output"),
    ("declared_shape_wrong", "zoo", plan_edit(_declared_tensor_shape),
     "is declared with shape [1, 4, 4, 3], but the step makes [1, 4, 3, 4]"),
    # attributes
    ("groups_0", "zoo", step_attr("fused_convolution", "groups", 0), "groups 0 must be > 0"),
    ("groups_negative", "zoo", step_attr("fused_convolution", "groups", -2), "groups -2 must be > 0"),
    ("groups_not_dividing", "zoo", step_attr("fused_convolution", "groups", 3), "groups 3 must divide the 4"),
    ("groups_bool", "zoo", step_attr("fused_convolution", "groups", True), "groups"),
    ("dilation_0", "zoo", step_attr("fused_convolution", "dilation", [0, 1]), "dilation [0, 1] must be > 0"),
    ("stride_negative", "zoo", step_attr("fused_convolution", "stride", [-1, 1]), "stride [-1, 1] must be > 0"),
    ("stride_one_entry", "zoo", step_attr("fused_convolution", "stride", [1]), "stride [1] must have 2 entries"),
    ("stride_text", "zoo", step_attr("fused_convolution", "stride", "1, 1"), "stride"),
    ("pads_negative", "zoo", step_attr("fused_convolution", "pads", [1, -1, 1, 1]), "pads [1, -1, 1, 1] must be >= 0"),
    ("pads_100000", "conv", step_attr("fused_convolution", "pads", [100_000] * 4),
     "is declared with shape [1, 4, 9, 7], but the step makes [1, 4, 200007, 200005]"),
    ("pads_100000_shapes_edited_no_memory_plan", "conv", plan_edit(_huge_pads_consistently("none")),
     "bytes together, more than the 1099511627776 an engine may"),
    ("pads_100000_shapes_and_memory_plan_edited", "conv", plan_edit(_huge_pads_consistently("recomputed")),
     "bytes together, more than the 1099511627776 an engine may"),
    ("pads_2_to_40", "conv", step_attr("fused_convolution", "pads", [2**40] * 4),
     "bytes, more than the 1099511627776 a step may use"),
    ("pads_2_to_41", "conv", step_attr("fused_convolution", "pads", [2**41] * 4), "pads 2199023255552 is beyond"),
    ("pool_kernel_0", "zoo", step_attr("pooling", "kernel", [0, 2]), "kernel [0, 2] must be > 0"),
    ("pool_stride_0", "zoo", step_attr("pooling", "stride", [1, 0]), "stride [1, 0] must be > 0"),
    ("slice_step_0", "zoo", step_attr("slice", "steps", [1, 1, 0, 1]), "steps [1, 1, 0, 1] must not hold 0"),
    ("slice_axes_repeated", "zoo", step_attr("slice", "axes", [0, 1, 2, 2]), "axes [0, 1, 2, 2] names an axis twice"),
    ("slice_axis_99", "zoo", step_attr("slice", "axes", [0, 1, 99, 3]), "axes 99 is out of range"),
    ("softmax_axis_99", "zoo", step_attr("softmax", "axis", 99), "axis 99 is out of range for an input of rank 4"),
    ("concat_axis_99", "zoo", step_attr("concatenation", "axis", -99), "axis -99 is out of range"),
    ("reduce_axes_repeated", "zoo", step_attr("reduce", "axes", [2, -2]), "axes [2, -2] names an axis twice"),
    ("duplicate_permutation", "zoo", step_attr("shuffle", "first_transpose", [0, 1, 3, 3]),
     "first_transpose [0, 1, 3, 3] is not a permutation of the 4 axes"),
    ("permutation_too_short", "zoo", step_attr("shuffle", "first_transpose", [0, 1, 2]), "is not a permutation"),
    ("pad_crops_more_than_the_dim", "zoo", step_attr("pad", "pads", [0, 0, -9, 0, 0, 0, 0, 0]),
     "crop more than the 5 of axis 2"),
    ("attribute_unknown", "zoo", step_attr("softmax", "code", "import os"), "a softmax layer has no attributes"),
    ("layer_kind_unknown", "zoo", plan_edit(lambda p: step_of_kind(p, "softmax")["op"].__setitem__("kind", "eval")),
     "unknown layer kind 'eval'"),
    ("activation_unknown", "conv", step_attr("fused_convolution", "activation", "os.system"), "activation"),
    # dtypes the CPU kernel cannot take, though the meta device does (found by the fuzzer: a traceback when run)
    ("bit_shift_of_floats", "pointwise", step_attr("fused_pointwise", "program", ["t0 = bit_shift_left in0 in1",
                                                                                 "out = t0"]),
     "do not fit it (NotImplementedError"),
    # values the meta device passes and the CPU kernels refuse when run (found by the fuzzer)
    ("celu_alpha_0_post_activation", "conv", step_attr("fused_convolution", "post_activation", "celu"),
     "post_activation celu has alpha 0"),
    ("celu_alpha_0_in_program", "pointwise", step_attr("fused_pointwise", "program", ["t0 = celu in0 0 0",
                                                                                     "out = t0"]),
     "program instruction 't0': celu has alpha 0"),
    ("conv_bias_of_another_shape", "conv", plan_edit(_conv_bias_is_its_weight),
     "bias 'convolution.weight' of shape [4, 3, 3, 3] must be 1-D with one entry per filter (4)"),
    # in-place residuals and the memory plan
    ("residual_in_place_not_allowed", "zoo", plan_edit(_residual_in_place_without_residual),
     "residual_in_place is set, but its residual is not one it may store over"),
    ("memory_plan_arena", "zoo", plan_edit(_memory_arena), "the memory plan (arena of"),
    ("memory_plan_overlap", "zoo", plan_edit(_memory_overlap), "is not the one its steps make"),
    ("memory_plan_offset_negative", "zoo", plan_edit(lambda p: p["memory"]["offsets"].__setitem__("x", -8)),
     "memory offset of 'x' must be an integer from 0"),
]
IDS = [case[0] for case in CASES]
assert len(set(IDS)) == len(IDS)


@pytest.fixture(params=CASES, ids=IDS)
def bad_engine(request, blobs, tmp_path):
    """(path of the edited engine file, words its error must hold)."""
    _, engine, edit, words = request.param
    path = tmp_path / "edited.engine"
    path.write_bytes(edit(blobs[engine]))
    return path, words


def test_edited_engine_is_one_engine_format_error(bad_engine):
    path, words = bad_engine
    with pytest.raises(EngineFormatError) as raised:
        tk.Runtime().load(path)
    message = str(raised.value)
    assert words in message
    assert message.startswith(f"engine file {str(path)!r}") and "\n" not in message and len(message) < 1500
    assert message.endswith("`kiln build`") or message.endswith("copy the file again")  # what to do about it


def test_kiln_run_on_edited_engine_is_exit_2_and_one_line(bad_engine, capsys):
    path, words = bad_engine
    assert kiln_main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: engine file") and err.count("\n") == 1 and words in err


def test_each_case_is_refused_for_its_edit_alone(blobs):
    """The unedited engines load: each case's error comes from its edit, not from the engine it starts from."""
    for blob in blobs.values():
        tk.Runtime().deserialize(blob)
    assert tensor_spec(plan_of(blobs["zoo"]), step_named(plan_of(blobs["zoo"]), "slice")["outputs"][0])


@pytest.mark.parametrize("memory", ["none", "recomputed"])
def test_engine_larger_than_the_machines_memory_is_refused(blobs, memory, monkeypatch):
    """A consistent edit (pads, every shape after them, the memory plan) that stays under the file format's limits
    but not under this machine's memory: refused before anything is allocated. The machine is made 1 GiB here."""
    from tensorkiln.plan import validate

    monkeypatch.setattr(validate, "_physical_memory", lambda: 2**30)
    tk.Runtime().deserialize(blobs["conv"])  # a small engine fits
    blob = edited(blobs["conv"], _huge_pads_consistently(memory, pads=5000))  # 2 tensors of 1.5 GiB
    with pytest.raises(EngineFormatError, match=r"needs 3\.0 GiB for its tensors, more than this machine's 1\.0 GiB"):
        tk.Runtime().deserialize(blob)


# ---- representative cases through `kiln run` and `kiln inspect` in processes of their own -----------------------
PROCESS_CASES = ["header_200k_nested_brackets", "metadata_extra_int"]  # a RecursionError, a SafetensorError before


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_kiln_process_on_edited_engine_exits_2_with_one_line(case, blobs, tmp_path):
    from test_plan_attack import assert_one_line_error, kiln

    _, engine, edit, words = CASES[IDS.index(case)]
    (tmp_path / "edited.engine").write_bytes(edit(blobs[engine]))
    command = "inspect" if case == "metadata_extra_int" else "run"
    result = kiln(command, "edited.engine", cwd=tmp_path)
    assert result.returncode != -8 and result.returncode < 128  # no signal (SIGFPE was 136)
    assert_one_line_error(result, words)
    assert isinstance(result, subprocess.CompletedProcess) and sys.executable


def test_an_unregistered_plugin_is_named_in_one_short_line(blobs, tmp_path, capsys):
    """A step edited into a plugin the process has not registered: MissingPluginError (kiln adds --plugins), one line,
    however long and multi-line the file's plugin parameters are."""
    params = json.dumps({"pad": "y" * 100_000, "more": [1, 2]}, indent=1)  # newlines inside the parameters' JSON

    def edit(plan: dict) -> None:
        step = step_of_kind(plan, "softmax")
        step["op"] = {"kind": "plugin", "attrs": {"type": "not_registered_anywhere", "params_json": params,
                                                  "data_dependent": False}}
        step["tactic"] = "cpu.plugin.registered"

    path = tmp_path / "plugin.engine"
    path.write_bytes(edited(blobs["zoo"], edit))
    with pytest.raises(EngineFormatError, match="not_registered_anywhere") as raised:
        tk.Runtime().load(path)
    assert type(raised.value).__name__ == "MissingPluginError"
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 1500
    assert kiln_main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plugins" in err
