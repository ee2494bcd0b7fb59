"""What the TFLite fixture scripts share: where the fixtures go, the one random generator (cases draw from it in
order, so the committed values come from this sequence), and the op names a model holds."""
from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "importers" / "tflite" / "data"
RNG = np.random.default_rng(23)


def op_names(model: bytes) -> set[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.ModelT.InitFromPackedBuf(model, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return {names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in root.operatorCodes}
