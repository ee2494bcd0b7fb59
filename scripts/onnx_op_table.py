#!/usr/bin/env python3
"""Regenerate the README's table of supported ONNX operators: opset range and conformance counts per op.

    python3 scripts/onnx_op_table.py            # runs the conformance suite, rewrites README.md between markers
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import onnx

from tensorkiln.conformance import run_suite, summarize
from tensorkiln.importers.onnx import supported_ops
from tensorkiln.importers.onnx.registry import MAX_OPSET, MIN_OPSET

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- onnx-op-table:begin -->", "<!-- onnx-op-table:end -->"


def versions(op: str) -> str:
    """The opsets in tensorkiln's range where the operator's definition changed (its ONNX versions)."""
    try:
        since = sorted({s.since_version for s in onnx.defs.get_all_schemas_with_history()
                        if s.name == op and s.domain == ""})
    except Exception:  # noqa: BLE001  (an unknown op has no schema)
        return "-"
    first = max([v for v in since if v <= MIN_OPSET] or [since[0]])
    return ", ".join(str(v) for v in since if v >= first)


def table() -> str:
    counts = summarize(run_suite())
    lines = [f"Opsets {MIN_OPSET} to {MAX_OPSET} are read; the second column lists the opsets in which each operator's "
             "definition changed, from the one in effect at opset 7.", "",
             "| operator | ONNX versions | conformance passed | failed | excluded |", "| --- | --- | --- | --- | --- |"]
    for op in supported_ops():
        passed, failed, excluded = counts.get(op, (0, 0, 0))
        lines.append(f"| {op} | {versions(op)} | {passed} | {failed} | {excluded} |")
    return "\n".join(lines)


def main() -> int:
    text = README.read_text()
    if BEGIN not in text:
        print(f"README.md has no {BEGIN} marker", file=sys.stderr)
        return 1
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{table()}\n{END}", text, flags=re.S)
    README.write_text(new)
    print(f"{len(supported_ops())} operators written to {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
