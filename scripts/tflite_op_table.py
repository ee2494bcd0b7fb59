"""Print the README's TFLite op table from the converter registry and the committed test fixtures.

    python scripts/tflite_op_table.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tensorkiln.importers.tflite import supported_ops

DATA = Path(__file__).resolve().parents[1] / "tests" / "importers" / "tflite" / "data"


def main() -> None:
    tested: dict[str, set[str]] = {}
    for path in sorted(DATA.glob("*.npz")):
        variant = "int8" if path.stem.endswith("_int8") else "hybrid" if path.stem.endswith("_hybrid") else "float"
        for op in np.load(path)["target"]:
            tested.setdefault(str(op), set()).add(variant)
    ops = supported_ops()
    print(f"{len(ops)} TFLite builtin operators convert; {sum(op in tested for op in ops)} are tested against "
          "tf.lite.Interpreter (tests/importers/tflite).\n")
    print("| operator | tested (float / int8 / hybrid) |")
    print("|---|---|")
    for op in ops:
        kinds = ", ".join(k for k in ("float", "int8", "hybrid") if k in tested.get(op, ()))
        print(f"| {op} | {kinds or 'converted, no fixture (the converter does not emit it from TF ops)'} |")


if __name__ == "__main__":
    main()
