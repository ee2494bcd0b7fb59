"""Every ONNX operator tensorkiln converts has a numeric test: its name appears, quoted, in one of the
test_ops_*.py files (or in the file listed for it below). A converter added without a test fails here."""
from __future__ import annotations

import re
from pathlib import Path

from tensorkiln.importers.onnx.registry import supported_ops

HERE = Path(__file__).resolve().parent

# op -> the test file that checks it instead (each against onnxruntime), and why it lives there
TESTED_ELSEWHERE = {
    "LSTM": "test_recurrent.py",              # recurrent cells: every direction, lengths, initial states
    "GRU": "test_recurrent.py",
    "RNN": "test_recurrent.py",
    "NonZero": "test_data_dependent.py",      # outputs sized at run time
    "NonMaxSuppression": "test_data_dependent.py",
    "Unique": "test_data_dependent.py",
}


def _quoted_names(path: Path) -> set[str]:
    return set(re.findall(r"[\"']([A-Z][A-Za-z0-9]*)[\"']", path.read_text()))


def test_every_supported_op_has_a_numeric_test():
    tested = set()
    for path in HERE.glob("test_ops_*.py"):
        if path.name != Path(__file__).name:
            tested |= _quoted_names(path)
    missing = []
    for op in supported_ops():
        elsewhere = TESTED_ELSEWHERE.get(op)
        if elsewhere is not None:
            if op not in _quoted_names(HERE / elsewhere) and op not in (HERE / elsewhere).read_text():
                missing.append(f"{op} (expected in {elsewhere})")
        elif op not in tested:
            missing.append(op)
    assert not missing, (f"{len(missing)} supported ONNX op(s) have no test comparing them with a reference: "
                         f"{missing}. Add a case to tests/importers/onnx/test_ops_<family>.py "
                         "(see onnx_case.check), or list the op in TESTED_ELSEWHERE with the file and the reason.")


def test_the_exception_list_holds_only_supported_ops():
    stale = sorted(set(TESTED_ELSEWHERE) - set(supported_ops()))
    assert not stale, f"TESTED_ELSEWHERE lists ops with no converter: {stale}; remove them"
