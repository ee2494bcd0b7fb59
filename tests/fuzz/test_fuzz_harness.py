"""The fuzzing harness itself: case files, the classification of outcomes (clean error, traceback, crash, hang)
by the runner's worker processes, saved findings and their replay, summary.json, and the mutators (driven by
Hypothesis: whatever decisions it draws, a mutator must make a case, never raise)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorkiln.errors import EngineFormatError, InputError
from tensorkiln.fuzz.case import CLEAN, CRASH, HANG, KINDS, OK, TRACEBACK, Case, outcome_of_exception
from tensorkiln.fuzz.choices import HypothesisChoices, RandomChoices
from tensorkiln.fuzz.json_mutator import JsonMutator, dumps, node_paths
from tensorkiln.fuzz.runner import Campaign, CampaignConfig, format_report, write_summary
from tensorkiln.fuzz.seeds import SeedBundle
from tensorkiln.fuzz.targets import CAMPAIGN_TARGETS, get_target, run_case
from tensorkiln.fuzz.targets.engine import mutate_engine, plan_of, reseal
from tensorkiln.fuzz.targets.selftest import selftest_case

REPO = Path(__file__).resolve().parents[2]
EMPTY_BUNDLE = SeedBundle({}, {}, {}, {})
# Hypothesis: a few dozen decision sequences per target; no example database written into the checkout
MUTATOR_SETTINGS = settings(max_examples=40, deadline=None, database=None,
                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- case files and the classification of one outcome ---------------------------------------------------------
def test_case_file_round_trip():
    case = Case("engine", (b"\x00plan\n", b"", b"weights"), {"seed": "cnn", "mutations": ["a", "b"]})
    decoded = Case.decode(case.encode())
    assert decoded == case and decoded.digest == case.digest
    with pytest.raises(ValueError, match="TKFUZZ1"):
        Case.decode(b"not a case")


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001 - the traceback is what the test needs
        return caught


@pytest.mark.parametrize("error, kind", [
    (EngineFormatError("bad plan"), CLEAN), (InputError("bad input"), CLEAN),
    (FileNotFoundError(2, "No such file or directory", "weights.bin"), CLEAN),  # kiln: one line, exit 2
    (ZeroDivisionError("division by zero"), TRACEBACK), (MemoryError(), TRACEBACK),
    (RecursionError("maximum recursion depth exceeded"), TRACEBACK), (KeyError("x"), TRACEBACK),
    (SystemExit(3), TRACEBACK),
])
def test_outcome_of_exception(error, kind):
    outcome = outcome_of_exception(_raised(error))
    assert outcome.kind == kind and outcome.error_type == type(error).__name__
    assert (outcome.detail != "") == (kind == TRACEBACK)  # a traceback keeps its text for the finding's file


def test_a_library_refusal_is_clean():
    from tensorkiln.runtime import Runtime

    with pytest.raises(Exception) as refused:  # an engine file with an empty header
        Runtime().deserialize(b"\x08" + b"\x00" * 7 + b"{}      ")
    assert outcome_of_exception(refused.value).kind == CLEAN, refused.value


@pytest.mark.parametrize("behaviour, kind", [("ok", OK), ("clean", CLEAN), ("traceback", TRACEBACK)])
def test_run_case_in_process(behaviour, kind, tmp_path):
    outcome = run_case(selftest_case(behaviour), tmp_path)
    assert outcome.kind == kind and outcome.stage == behaviour
    if kind == TRACEBACK:
        assert outcome.where.startswith("selftest.py:") and outcome.signature.startswith("traceback:ZeroDivision")


# ---- the runner: worker processes, crashes, hangs, findings, summary, replay ----------------------------------
def test_runner_classifies_crashes_hangs_and_tracebacks(tmp_path):
    config = CampaignConfig(("selftest",), tmp_path / "findings", case_timeout=4.0, jobs=1)
    behaviours = ["ok", "clean", "traceback", "memory", "crash", "ok", "abort", "hang", "traceback", "ok"]
    with Campaign(config, EMPTY_BUNDLE, say=lambda line: None) as campaign:
        stats = campaign.run_cases("selftest", [selftest_case(b) for b in behaviours])

    assert stats.cases == len(behaviours)
    assert {k: stats.kinds[k] for k in KINDS if stats.kinds[k]} == {OK: 3, CLEAN: 1, TRACEBACK: 3, CRASH: 2, HANG: 1}
    by_kind = {}
    for signature, entry in stats.findings.items():
        by_kind.setdefault(signature.split(":")[0], []).append((signature, entry))
    # one signature per distinct bug: ZeroDivisionError twice is one finding counted twice, MemoryError another
    tracebacks = dict(by_kind[TRACEBACK])
    assert sorted(e["count"] for e in tracebacks.values()) == [1, 2]
    assert any(s.startswith("traceback:MemoryError") for s in tracebacks)
    crashes = {s.split(":")[1] for s, _ in by_kind[CRASH]}
    assert crashes == {"SIGSEGV", "SIGABRT"}  # the signal that killed the worker, from its exit status
    [(hang_signature, hang)] = by_kind[HANG]
    assert hang_signature.startswith("hang:Timeout:selftest.py:")  # faulthandler's dump of the hung stack
    for _, entry in (*by_kind[TRACEBACK], *by_kind[CRASH], *by_kind[HANG]):
        saved = Path(entry["file"])
        assert saved.is_file() and saved.with_suffix(".txt").is_file()
        assert Case.decode(saved.read_bytes()).target == "selftest"
        assert f"--replay {saved}" in saved.with_suffix(".txt").read_text()

    summary = json.loads(write_summary(config, EMPTY_BUNDLE, {"selftest": stats}).read_text())
    assert summary["config"]["targets"] == ["selftest"] and summary["seed_build_errors"] == {}
    [target] = summary["targets"]
    assert set(target) == {"target", "cases", "seconds", "cases_per_minute", "kinds", "stages", "mutator_errors",
                           "findings"}
    assert target["cases"] == len(behaviours) and target["kinds"]["crash"] == 2 and target["kinds"]["hang"] == 1
    assert target["stages"]["ok at ok"] == 3 and target["mutator_errors"] == 0
    assert all(set(f) == {"count", "mutations", "message", "stage", "file"} for f in target["findings"].values())
    report = format_report({"selftest": stats})
    assert "traceback" in report.splitlines()[0] and "hang:Timeout" in report

    traceback_file = next(Path(e["file"]) for s, e in tracebacks.items() if "ZeroDivision" in s)
    replay = subprocess.run([sys.executable, "-m", "tensorkiln.fuzz", "--replay", str(traceback_file)],
                            capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert replay.returncode == 1, replay.stderr
    assert "outcome: traceback" in replay.stdout and "ZeroDivisionError" in replay.stdout


def test_a_crash_inside_the_reference_is_not_a_tensorkiln_finding():
    from tensorkiln.fuzz.runner import _died_in_reference, _innermost_frame

    dump = """Fatal Python error: Segmentation fault

Current thread 0x00007f2e341f0b80 (most recent call first):
  File "/usr/lib/python3/site-packages/onnxruntime/capi/onnxruntime_inference_collection.py", line 406 in run
  File "/work/main/tensorkiln/fuzz/reference.py", line 37 in reference_outputs
  File "/work/main/tensorkiln/fuzz/targets/onnx_models.py", line 325 in run_onnx_case
"""
    assert _died_in_reference(dump)
    ours = dump.replace("/usr/lib/python3/site-packages/onnxruntime/capi/onnxruntime_inference_collection.py",
                        "/work/main/tensorkiln/kernels/cpu/conv.py")
    assert not _died_in_reference(ours) and _innermost_frame(ours) == "tensorkiln/kernels/cpu/conv.py:406"
    assert not _died_in_reference("Fatal Python error: Aborted\n")


def test_replay_of_a_clean_case_exits_0(tmp_path):
    path = tmp_path / "clean.bin"
    path.write_bytes(selftest_case("clean").encode())
    replay = subprocess.run([sys.executable, "-m", "tensorkiln.fuzz", "--replay", str(path)], capture_output=True,
                            text=True, cwd=REPO, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert replay.returncode == 0, replay.stderr
    assert "outcome: clean" in replay.stdout


def test_campaign_time_split_follows_the_shares(tmp_path):
    config = CampaignConfig(("engine", "onnx", "caffe"), tmp_path, seconds=600, shares={"onnx": 3.0})
    campaign = Campaign(config, EMPTY_BUNDLE)
    assert [campaign._share(name) for name in config.targets] == [120.0, 360.0, 120.0]


# ---- the mutators --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CAMPAIGN_TARGETS)
def test_mutators_make_a_case_whatever_they_draw(name, fuzz_bundle):
    target = get_target(name)

    @MUTATOR_SETTINGS
    @given(st.data())
    def mutate_once(data):
        case = target.mutate(HypothesisChoices(data), fuzz_bundle)
        assert case.target == name and Case.decode(case.encode()) == case
        mutations = case.info["mutations"]
        assert isinstance(mutations, list) and all(isinstance(m, str) and m for m in mutations)

    mutate_once()


@pytest.mark.parametrize("name", CAMPAIGN_TARGETS)
def test_mutators_are_replayable_by_seed(name, fuzz_bundle):
    target = get_target(name)
    for seed in range(20):
        first, second = (target.mutate(RandomChoices(seed), fuzz_bundle) for _ in range(2))
        assert first.encode() == second.encode()


def test_engine_mutations_reach_plans_headers_and_bytes(fuzz_bundle):
    """Over a few hundred cases, all three layers of an engine file are mutated, and the re-sealed plans differ
    from their seeds (a mutator that changed nothing would make every case a clean pass)."""
    layers, changed_plans = set(), 0
    for seed in range(300):
        case = mutate_engine(RandomChoices(seed), fuzz_bundle)
        first = case.info["mutations"][0]
        layer = "header" if first.startswith("header") else "bytes" if any(
            w in first for w in ("truncated", "flipped", "header length", "nested", "inserted", "deleted",
                                 "appended")) else "plan"
        layers.add(layer)
        if layer == "plan":
            try:
                changed_plans += plan_of(case.parts[0]) != plan_of(fuzz_bundle.engines[case.info["seed"]])
            except (ValueError, RecursionError):  # a plan no longer JSON (NaN in a field, a deep nest): changed too
                changed_plans += 1
    assert layers == {"plan", "header", "bytes"}
    assert changed_plans > 150


def test_a_resealed_plan_passes_the_checksum(fuzz_bundle):
    """Re-sealing recomputes the checksum as the writer does, so only the plan's validation can refuse an edit;
    the same edit without re-sealing is refused as corrupted."""
    from tensorkiln.fuzz.targets.engine import join_container, split_container
    from tensorkiln.runtime import Runtime

    blob = fuzz_bundle.engines["cnn"]
    plan = plan_of(blob)
    plan["network_name"] = "edited"
    engine = Runtime().deserialize(reseal(blob, dumps(plan)))
    assert engine.create_execution_context() is not None

    header, data = split_container(blob)
    header["__metadata__"]["plan"] = dumps(plan)
    with pytest.raises(EngineFormatError, match="checksum"):
        Runtime().deserialize(join_container(header, data))


def test_json_nesting_past_the_recursion_limit_is_written_as_text():
    mutator = JsonMutator(RandomChoices(0), [])
    root = {"steps": [1]}
    for _ in range(50):  # some draw of `nest` picks 100000
        mutator.nest(root, ("steps",))
    text = dumps(root)
    assert "[" * 1000 in text and "tkfuzz-nest" not in text


def test_json_mutations_keep_a_document():
    for seed in range(200):
        root = {"a": [1, 2, {"b": "x"}], "c": {"d": 1.5, "e": None}}
        mutator = JsonMutator(RandomChoices(seed), ["a", "b"])
        root, description = mutator.mutate(root, node_paths(root))
        assert isinstance(description, str) and description
        text = dumps(root)
        if "nested 1000" not in description and "nested 100000" not in description:
            assert json.dumps(json.loads(text)) == json.dumps(root)  # (NaN != NaN: compare the texts)


# ---- the ONNX target's reference (onnxruntime) ------------------------------------------------------------------
def test_reference_comparison():
    import numpy as np

    from tensorkiln.fuzz.case import OutputMismatch
    from tensorkiln.fuzz.reference import compare

    expected = {"y": np.array([1.0, np.nan, np.inf, 100.0], np.float32)}
    compare({"y": np.array([1.0004, np.nan, np.inf, 100.01], np.float32)}, expected, "reference:t")
    # the tolerance scales with the output's largest finite value: 1e30 somewhere hides a difference of 1
    compare({"y": np.array([2.0, 1e30], np.float32)}, {"y": np.array([1.0, 1e30], np.float32)}, "reference:t")
    for wrong, what in [([0.0, np.nan, np.inf, 100.0], "differs"), ([1.0, 0.0, np.inf, 100.0], "NaN"),
                        ([1.0, np.nan, -np.inf, 100.0], "differs"), ([1.0, np.nan, np.inf], "shape")]:
        with pytest.raises(OutputMismatch, match=what) as raised:
            compare({"y": np.array(wrong, np.float32)}, expected, "reference:t")
        assert raised.value.check == "reference:t"
    with pytest.raises(OutputMismatch, match="1 of 2"):
        compare({"i": np.array([1, 3])}, {"i": np.array([1, 2])}, "reference:t")


def test_extra_nan_is_allowed_only_behind_an_order_dependent_op(fuzz_bundle, tmp_path):
    """Found by the hour's campaign: Relu mutated to Asin before MaxPool gave NaN in 41 elements, onnxruntime in 20
    (its MaxPool keeps a NaN only when it is last in the window; tests/test_nan_inf.py)."""
    import numpy as np

    from tensorkiln.fuzz.case import OutputMismatch
    from tensorkiln.fuzz.reference import compare, drops_nan_by_position

    path = tmp_path / "cnn.onnx"
    path.write_bytes(fuzz_bundle.onnx_models["cnn"])
    assert drops_nan_by_position(str(path))
    path.write_bytes(fuzz_bundle.onnx_models["transformer"])
    assert not drops_nan_by_position(str(path))
    expected = {"y": np.array([1.0, np.nan, 3.0], np.float32)}
    compare({"y": np.array([np.nan, np.nan, 3.0], np.float32)}, expected, "reference:t", extra_nan_allowed=True)
    for wrong in ([1.0, 2.0, 3.0], [np.nan, np.nan, 4.0]):  # a NaN lost, or a number wrong, is still a mismatch
        with pytest.raises(OutputMismatch):
            compare({"y": np.array(wrong, np.float32)}, expected, "reference:t", extra_nan_allowed=True)
    with pytest.raises(OutputMismatch, match="NaN"):
        compare({"y": np.array([np.nan, np.nan, 3.0], np.float32)}, expected, "reference:t")


def test_only_tame_models_have_a_reference(fuzz_bundle, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from tensorkiln.fuzz.reference import is_tame

    for value, tame in [(np.nan, True), (0.5, True), (np.inf, False), (1e30, False), (-2e4, False)]:
        model = onnx.load_from_string(fuzz_bundle.onnx_models["cnn"])
        weight = model.graph.initializer[0]
        array = numpy_helper.to_array(weight).copy()
        array.reshape(-1)[3] = value
        weight.CopyFrom(numpy_helper.from_array(array, weight.name))
        path = tmp_path / "model.onnx"
        path.write_bytes(model.SerializeToString())
        assert is_tame(str(path)) is tame, value


@pytest.mark.parametrize("seed", ["cnn", "transformer", "pointwise", "shuffles"])
def test_unmutated_onnx_seeds_match_onnxruntime(seed, fuzz_bundle, tmp_path):
    case = Case("onnx", (fuzz_bundle.onnx_models[seed],), {"seed": seed, "mutations": [], "input_seed": 3})
    outcome = run_case(case, tmp_path)
    assert (outcome.kind, outcome.stage) == (OK, "compared"), outcome


def test_a_wrong_result_is_a_mismatch(fuzz_bundle, tmp_path, monkeypatch):
    """The comparison is live: where tensorkiln's outputs are not onnxruntime's (here the reference is doubled),
    the case is a mismatch, not a pass."""
    from tensorkiln.fuzz.targets import onnx_models

    real = onnx_models.reference_outputs
    monkeypatch.setattr(onnx_models, "reference_outputs", lambda *args: {k: v * 2 for k, v in real(*args).items()})
    case = Case("onnx", (fuzz_bundle.onnx_models["cnn"],), {"seed": "cnn", "mutations": [], "input_seed": 3})
    outcome = run_case(case, tmp_path)
    assert (outcome.kind, outcome.where) == ("mismatch", "reference:cnn"), outcome
