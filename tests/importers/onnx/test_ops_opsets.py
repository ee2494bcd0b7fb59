"""One simple case of each op at every opset from the op's first version (or 7) to 24, against onnxruntime:
the converters' opset branches (Softmax's 2-D coercion before 13, attributes that became inputs, ...) all
run. Cases whose attributes or inputs changed across versions are in the family files."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from onnx_case import Const, check, positive, rand

OPSETS = range(7, 25)
NEWEST = {"GlobalLpPool": 21}  # onnxruntime 1.32 has no GlobalLpPool-22


def _defined(op: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op, opset)
    except onnx.defs.SchemaError:
        return False
    return opset <= NEWEST.get(op, 99)


CASES = [
    # (op, inputs, attributes): valid at every opset the op exists in
    ("Relu", lambda: [rand(3, 7)], {}),
    ("Sigmoid", lambda: [rand(3, 7)], {}),
    ("Tanh", lambda: [rand(3, 7)], {}),
    ("LeakyRelu", lambda: [rand(3, 7)], {"alpha": 0.2}),
    ("Elu", lambda: [rand(3, 7)], {"alpha": 0.5}),
    ("HardSigmoid", lambda: [rand(3, 7)], {}),
    ("Softplus", lambda: [rand(3, 7)], {}),
    ("Selu", lambda: [rand(3, 7)], {}),
    ("Exp", lambda: [rand(3, 7)], {}),
    ("Abs", lambda: [rand(3, 7)], {}),
    ("Neg", lambda: [rand(3, 7)], {}),
    ("Sqrt", lambda: [positive(3, 7)], {}),
    ("Log", lambda: [positive(3, 7)], {}),
    ("Reciprocal", lambda: [positive(3, 7)], {}),
    ("Floor", lambda: [rand(3, 7)], {}),
    ("Ceil", lambda: [rand(3, 7)], {}),
    ("Add", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Mul", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Sub", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Div", lambda: [rand(3, 7), positive(3, 7, seed=1)], {}),
    ("Pow", lambda: [positive(3, 7), rand(3, 7, seed=1)], {}),
    ("Max", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Min", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Sum", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Mean", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Greater", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Less", lambda: [rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Equal", lambda: [rand(3, 7, dtype=np.int64, low=0, high=3), rand(3, 7, dtype=np.int64, low=0, high=3, seed=1)],
     {}),
    ("Not", lambda: [rand(3, 7, dtype=np.bool_)], {}),
    ("And", lambda: [rand(3, 7, dtype=np.bool_), rand(3, 7, dtype=np.bool_, seed=1)], {}),
    ("Softmax", lambda: [rand(2, 3, 5)], {"axis": 1}),
    ("LogSoftmax", lambda: [rand(2, 3, 5)], {}),
    ("Hardmax", lambda: [rand(2, 3, 5)], {"axis": 2}),
    ("MatMul", lambda: [rand(2, 3, 5), rand(5, 4, seed=1)], {}),
    ("Gemm", lambda: [rand(3, 5), Const(rand(5, 4, seed=1)), Const(rand(4, seed=2))], {"alpha": 0.5}),
    ("Conv", lambda: [rand(1, 3, 7, 5), Const(rand(4, 3, 3, 2, seed=1)), Const(rand(4, seed=2))],
     {"pads": [1, 0, 1, 1], "strides": [2, 1]}),
    ("ConvTranspose", lambda: [rand(1, 3, 4, 5), Const(rand(3, 2, 3, 2, seed=1))], {"strides": [2, 1]}),
    ("MaxPool", lambda: [rand(1, 2, 7, 5)], {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ("AveragePool", lambda: [rand(1, 2, 7, 5)], {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ("GlobalAveragePool", lambda: [rand(1, 2, 7, 5)], {}),
    ("GlobalMaxPool", lambda: [rand(1, 2, 7, 5)], {}),
    ("BatchNormalization", lambda: [rand(2, 3, 5), Const(rand(3)), Const(rand(3, seed=1)), Const(rand(3, seed=2)),
                                    Const(positive(3))], {}),
    ("InstanceNormalization", lambda: [rand(2, 3, 5), Const(rand(3)), Const(rand(3, seed=1))], {}),
    ("LRN", lambda: [rand(1, 5, 3, 3)], {"size": 3}),
    ("Concat", lambda: [rand(2, 3), rand(4, 3, seed=1)], {"axis": 0}),
    ("Transpose", lambda: [rand(2, 3, 5)], {"perm": [2, 0, 1]}),
    ("Flatten", lambda: [rand(2, 3, 5)], {"axis": 2}),
    ("Gather", lambda: [rand(5, 3), Const(np.array([4, 0, 2], np.int64))], {}),
    ("Identity", lambda: [rand(3, 7)], {}),
    ("Cast", lambda: [rand(3, 7, low=-9, high=9)], {"to": TensorProto.INT32}),
    ("Where", lambda: [rand(3, 7, dtype=np.bool_), rand(3, 7), rand(3, 7, seed=1)], {}),
    ("Expand", lambda: [rand(3, 1), Const(np.array([2, 3, 4], np.int64))], {}),
    ("Tile", lambda: [rand(3, 2), Const(np.array([2, 3], np.int64))], {}),
    ("DepthToSpace", lambda: [rand(1, 8, 2, 3)], {"blocksize": 2}),
    ("SpaceToDepth", lambda: [rand(1, 2, 4, 6)], {"blocksize": 2}),
    ("ArgMax", lambda: [rand(3, 7)], {"axis": 1}),
    ("ArgMin", lambda: [rand(3, 7)], {"keepdims": 0}),
    ("PRelu", lambda: [rand(2, 3, 5), Const(rand(3, 1))], {}),
    ("Dropout", lambda: [rand(3, 7)], {}),
    ("Shape", lambda: [rand(3, 7)], {}),
    ("Size", lambda: [rand(3, 7)], {}),
    ("Sign", lambda: [rand(3, 7)], {}),
    ("Erf", lambda: [rand(3, 7)], {}),
    ("IsNaN", lambda: [rand(3, 7)], {}),
    ("Sin", lambda: [rand(3, 7)], {}),
    ("Atan", lambda: [rand(3, 7)], {}),
    ("Softsign", lambda: [rand(3, 7)], {}),
    ("ThresholdedRelu", lambda: [rand(3, 7)], {"alpha": 0.3}),
    ("Einsum", lambda: [rand(3, 4), rand(4, 5, seed=1)], {"equation": "ij,jk->ik"}),
    ("MeanVarianceNormalization", lambda: [rand(2, 3, 4, 5)], {}),
    ("LpNormalization", lambda: [rand(3, 7)], {}),
    ("GlobalLpPool", lambda: [rand(1, 2, 7, 5)], {}),
    ("LpPool", lambda: [rand(1, 2, 7, 5)], {"kernel_shape": [2, 2]}),
    ("EyeLike", lambda: [rand(3, 5)], {}),
    ("Xor", lambda: [rand(3, 7, dtype=np.bool_), rand(3, 7, dtype=np.bool_, seed=1)], {}),
]

PARAMS = [(op, inputs, attrs, opset) for op, inputs, attrs in CASES for opset in OPSETS if _defined(op, opset)]


@pytest.mark.parametrize("op, inputs, attrs, opset", PARAMS, ids=[f"{p[0]}-{p[3]}" for p in PARAMS])
def test_op_at_opset(op, inputs, attrs, opset):
    check(op, inputs(), opset=opset, **attrs)
