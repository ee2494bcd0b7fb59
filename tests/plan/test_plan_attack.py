"""Issue 18's attacks on the engine file, each re-sealed (checksum recomputed) so that only the plan validator stands
between the file and the process: code execution through a generated Triton kernel's source, the SIGFPE of a stride
of 0, and silently wrong outputs from edited output declarations. Each must be one EngineFormatError, and `kiln run`
must exit with code 2 and one line on stderr (never a traceback, never a signal)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plan_editing import conv_engine, edited, pointwise_engine, step_of_kind

import tensorkiln as tk
from tensorkiln.errors import EngineFormatError

TRITON_TACTIC = "cuda.fused_pointwise.triton_generated_b1024_w4"
CPU_TACTIC = "cpu.fused_pointwise.torch"
MARKER = "kiln_attack_marker"  # a module beside the engine that leaves a file behind when anything imports it


@pytest.fixture(scope="module")
def pointwise_blob() -> bytes:
    return pointwise_engine().serialize()


@pytest.fixture(scope="module")
def conv_blob() -> bytes:
    return conv_engine().serialize()


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """An importable module on sys.path (as an attacker's file beside the engine would be) that writes the returned
    path when imported; generated kernels are cached in tmp_path too."""
    imported = tmp_path / "imported.txt"
    (tmp_path / f"{MARKER}.py").write_text(f"open({str(imported)!r}, 'w').write('code from the engine ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TENSORKILN_TRITON_CACHE", str(tmp_path / "triton_cache"))
    monkeypatch.delitem(sys.modules, MARKER, raising=False)
    return imported


def _load_and_run(path: Path) -> None:
    """What `kiln run` does with an engine: load it, then run it on ones (reached only where loading passes)."""
    engine = tk.Runtime().load(path)
    feed = {spec.name: np.ones(spec.shape, np.float32) for spec in engine.inputs}
    engine.create_execution_context().execute(feed)


def _injected(program_line: str, tactic: str, target: str = "cpu"):
    def edit(plan: dict) -> None:
        plan["target"] = target
        step = step_of_kind(plan, "fused_pointwise")
        step["tactic"] = tactic
        step["op"]["attrs"]["program"] = [program_line, "out = t0"]
    return edit


# The program line, then other ways to smuggle code or odd characters through a program line.
INJECTED_LINES = {
    "issue_exact": "t0 = div\nimport this",
    "issue": f"t0 = div\nimport {MARKER}",
    "newline_after_valid_instruction": f"t0 = div in0 in1\nimport {MARKER}",
    "carriage_return": f"t0 = neg in0\rimport {MARKER}",
    "unicode_line_separator": f"t0 = neg in0\u2028import {MARKER}",
    "semicolon": f"t0 = neg in0; import {MARKER}",
    "dunder_import": f"t0 = neg __import__('{MARKER}')",
    "quotes": f't0 = neg "\nimport {MARKER}\n"',
    "activation_parameter": f"t0 = relu in0 __import__('{MARKER}') 0",
    "unicode_identifier": "t\u03b1 = neg in0",  # tα: a Python identifier, but not ASCII
    "fullwidth_input_name": "t0 = neg \uff49\uff4e0",  # ｉｎ0, which NFKC-normalizes to in0
    "very_long_name": "t0 = neg " + "a" * 1_000_000,
    "very_long_line": "t0 = sum in0 in0" + " " * 1_000_000,
}


@pytest.mark.parametrize("target, tactic", [("cpu", TRITON_TACTIC), ("cpu", CPU_TACTIC), ("cuda", TRITON_TACTIC)],
                         ids=["cpu_engine_cuda_tactic", "cpu_engine_cpu_tactic", "cuda_engine"])
@pytest.mark.parametrize("line", INJECTED_LINES.values(), ids=INJECTED_LINES.keys())
def test_code_in_a_program_line_is_refused_and_never_runs(pointwise_blob, marker, tmp_path, target, tactic, line):
    this_imported_before = "this" in sys.modules
    path = tmp_path / "attack.engine"
    path.write_bytes(edited(pointwise_blob, _injected(line, tactic, target)))
    with pytest.raises(EngineFormatError) as raised:
        _load_and_run(path)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 2000, message[:300]
    # the CPU engine names the foreign tactic; otherwise the program (its parser's words) is what is refused
    expected = "tactic" if (target, tactic) == ("cpu", TRITON_TACTIC) else "fused pointwise"
    assert expected in message
    assert not marker.exists() and MARKER not in sys.modules
    assert "this" not in sys.modules or this_imported_before
    assert not list((tmp_path / "triton_cache").glob("*.py"))  # no source was even written


def test_a_cpu_engine_never_reaches_a_cuda_kernel(pointwise_blob, marker, tmp_path):
    """A valid program is refused as well: the tactic's target, not the program, is what closes the CUDA path."""
    path = tmp_path / "foreign.engine"
    path.write_bytes(edited(pointwise_blob, _injected("t0 = div in0 in1", TRITON_TACTIC)))
    with pytest.raises(EngineFormatError, match="cuda tactic in an engine built for cpu"):
        tk.Runtime().load(path)


def test_kernel_for_tactic_refuses_another_targets_tactic():
    from tensorkiln.tactics.selection import kernel_for_tactic

    assert callable(kernel_for_tactic(CPU_TACTIC, "cpu"))
    for tactic, target in ((TRITON_TACTIC, "cpu"), (CPU_TACTIC, "cuda")):
        with pytest.raises(EngineFormatError, match="tactic, but the engine is built for"):
            kernel_for_tactic(tactic, target)
    with pytest.raises(EngineFormatError, match="not of the form"):
        kernel_for_tactic("cpu.fused_pointwise.torch\nimport os", "cpu")


# ---- the SIGFPE of a stride of 0, and silently wrong outputs ---------------------------------------------------
def _zero_stride(plan: dict) -> None:
    step_of_kind(plan, "fused_convolution")["op"]["attrs"]["stride"] = [0, 0]


def _output_dtype_int8(plan: dict) -> None:
    plan["outputs"][0]["dtype"] = "int8"


def _output_and_tensor_dtype_int8(plan: dict) -> None:  # consistently: the output and the tensor that makes it
    for spec in (plan["outputs"][0], next(t for t in plan["tensors"] if t["name"] == plan["outputs"][0]["name"])):
        spec["dtype"] = "int8"


def _output_shape_transposed(plan: dict) -> None:
    """[1, 4, 9, 7] declared as [1, 4, 7, 9] (as the issue's (1, 4420, 2) declared (1, 2, 4420)), in the outputs and
    in the tensor that makes it."""
    name = plan["outputs"][0]["name"]
    for spec in (*plan["outputs"], *plan["tensors"]):
        if spec["name"] == name:
            spec["shape"] = [1, 4, 7, 9]


def _output_shape_transposed_only_in_outputs(plan: dict) -> None:
    plan["outputs"][0]["shape"] = [1, 4, 7, 9]


SILENT = {
    "stride_zero": (_zero_stride, "stride [0, 0] must be > 0"),
    "output_dtype_int8": (_output_dtype_int8, "is declared int8, but it is produced as float32"),
    "output_and_tensor_dtype_int8": (_output_and_tensor_dtype_int8, "is declared int8, but the step makes float32"),
    "output_shape_transposed": (_output_shape_transposed, "declared with shape [1, 4, 7, 9], but the step makes"),
    "output_shape_transposed_in_outputs": (_output_shape_transposed_only_in_outputs,
                                           "declared with shape [1, 4, 7, 9], but it is produced with [1, 4, 9, 7]"),
}


@pytest.mark.parametrize("edit, words", SILENT.values(), ids=SILENT.keys())
def test_crashing_or_lying_plans_are_refused_at_load(conv_blob, tmp_path, edit, words):
    path = tmp_path / "edited.engine"
    path.write_bytes(edited(conv_blob, edit))
    with pytest.raises(EngineFormatError) as raised:
        tk.Runtime().load(path)
    assert words in str(raised.value)


# ---- the same through `kiln run`, as real processes ---------------------------------------------------------------
def kiln(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`kiln` in a process of its own, running the tensorkiln these tests import (generated kernels cached in cwd)."""
    package_root = str(Path(tk.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
           "TENSORKILN_TRITON_CACHE": str(cwd / "triton_cache")}
    return subprocess.run([sys.executable, "-m", "tensorkiln.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])  # SIGFPE was 136 (-8 as a signal)
    assert result.stderr.startswith("kiln: error: ") and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_kiln_run_on_a_zero_stride_engine_exits_2_with_one_line(conv_blob, tmp_path):
    (tmp_path / "stride0.engine").write_bytes(edited(conv_blob, _zero_stride))
    assert_one_line_error(kiln("run", "stride0.engine", cwd=tmp_path), "stride", "rebuild the engine")


def test_kiln_run_on_the_code_execution_engine_exits_2_and_imports_nothing(pointwise_blob, tmp_path):
    imported = tmp_path / "imported.txt"
    # the attacker's module lies beside the engine, in the directory kiln runs in
    (tmp_path / f"{MARKER}.py").write_text(f"open({str(imported)!r}, 'w').write('code from the engine ran')\n")
    (tmp_path / "attack.engine").write_bytes(edited(pointwise_blob, _injected(INJECTED_LINES["issue"], TRITON_TACTIC)))
    result = kiln("run", "attack.engine", cwd=tmp_path)
    assert_one_line_error(result, "tactic")
    assert not imported.exists()
