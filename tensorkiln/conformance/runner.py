"""ONNX backend conformance: run onnx's generated node test cases against tensorkiln.

    python -m tensorkiln.conformance [--filter SUBSTRING] [--failures] [--json FILE] [--floor N]

Each case is one small model with stored inputs and expected outputs (onnx.backend.test's data). A
case passes when the model imports, builds, runs, and every output matches within the case's rtol and
atol, exactly as onnx.backend.test.BackendTest checks it. Cases are grouped by the operator under test.
Cases whose model needs something tensorkiln leaves out on purpose (training-only operators, strings,
sequences, exotic element types) are excluded, each with its reason (`exclusions.py`).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import json
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.loader import load_model_tests

from ..importers.onnx import supported_ops
from .exclusions import exclusion_reason


@dataclasses.dataclass(frozen=True)
class CaseResult:
    name: str
    op: str
    passed: bool
    reason: str = ""
    excluded: str = ""  # why the case does not count; empty when it counts


def _load_tensor(path: str):
    proto = onnx.TensorProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return numpy_helper.to_array(proto)


def case_op(model: onnx.ModelProto, name: str) -> str:
    """The operator a case tests: the test name's op when one node matches it, else the single node's op."""
    op_types = [n.op_type for n in model.graph.node]
    stem = name[len("test_"):].lower().replace("_", "")
    matches = [op for op in set(op_types) if stem.startswith(op.lower())]
    if matches:
        return max(matches, key=len)
    return op_types[0] if len(set(op_types)) == 1 else "(composite)"


def _case_data(case) -> tuple[onnx.ModelProto, list[tuple[list, list]]]:
    """The model and (inputs, expected outputs) pairs, from memory or from the case's folder."""
    if case.model is not None:
        arrays = lambda values: [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v  # noqa: E731
                                 for v in values]
        return case.model, [(arrays(i), arrays(o)) for i, o in case.data_sets or []]
    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    data_sets = []
    for folder in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*"))):
        load = lambda kind: [_load_tensor(p) for p in sorted(glob.glob(os.path.join(folder, f"{kind}_*.pb")),  # noqa
                                                              key=_index)]
        data_sets.append((load("input"), load("output")))
    return model, data_sets


def run_case(case) -> CaseResult:
    from ..backend import TensorkilnBackend

    model, data_sets = _case_data(case)
    op = case_op(model, case.name)
    excluded = exclusion_reason(case.name, model)
    if excluded:
        return CaseResult(case.name, op, False, excluded=excluded)
    try:
        rep = TensorkilnBackend.prepare(model)
        for inputs, expected in data_sets:
            outputs = rep.run(inputs)
            if len(outputs) != len(expected):
                raise AssertionError(f"{len(outputs)} outputs, expected {len(expected)}")
            for ref, out in zip(expected, outputs):
                _compare(ref, out, case.rtol, case.atol)
    except Exception as error:  # a conformance run reports every failure and goes on
        message = str(error).strip().splitlines()
        return CaseResult(case.name, op, False, f"{type(error).__name__}: {(message or [''])[0][:300]}")
    return CaseResult(case.name, op, True)


def _index(path: str) -> int:
    return int(os.path.basename(path).split("_")[1].split(".")[0])


def _compare(ref: np.ndarray, out: np.ndarray, rtol: float, atol: float) -> None:
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.dtype != out.dtype and not (ref.dtype == object):
        raise AssertionError(f"dtype {out.dtype} != expected {ref.dtype}")
    if ref.shape != out.shape:
        raise AssertionError(f"shape {out.shape} != expected {ref.shape}")
    if np.issubdtype(ref.dtype, np.floating):
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(out, ref)


def run_suite(name_filter: str = "") -> list[CaseResult]:
    cases = [c for c in load_model_tests(kind="node") if name_filter in c.name]
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            results.append(run_case(case))
    return results


def summarize(results: list[CaseResult]) -> dict[str, tuple[int, int, int]]:
    """Per operator: (passed, failed, excluded)."""
    per_op: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for result in results:
        per_op[result.op][2 if result.excluded else 0 if result.passed else 1] += 1
    return {op: (p, f, x) for op, (p, f, x) in sorted(per_op.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tensorkiln.conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--filter", default="", help="run only cases whose name contains this substring")
    parser.add_argument("--failures", action="store_true", help="list every failing case with its reason")
    parser.add_argument("--json", help="write per-case results to this JSON file")
    parser.add_argument("--floor", type=int, default=0, help="exit with status 1 when fewer cases pass")
    args = parser.parse_args(argv)
    results = run_suite(args.filter)
    for op, (passed, failed, excluded) in summarize(results).items():
        print(f"{op:32s} {passed:4d} passed {failed:4d} failed {excluded:4d} excluded")
    if args.failures:
        for result in results:
            if not result.passed and not result.excluded:
                print(f"FAIL {result.name}: {result.reason}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
    passed = sum(r.passed for r in results)
    excluded = sum(bool(r.excluded) for r in results)
    supported = set(supported_ops())
    counted = [r for r in results if r.op in supported and not r.excluded]
    print(f"supported operators: {len(supported)}; cases of supported operators: {sum(r.passed for r in counted)} of "
          f"{len(counted)} pass ({100 * sum(r.passed for r in counted) / max(len(counted), 1):.1f}%)")
    print(f"{passed} passed, {len(results) - passed - excluded} failed, {excluded} excluded")
    return 1 if passed < args.floor else 0


if __name__ == "__main__":
    sys.exit(main())
