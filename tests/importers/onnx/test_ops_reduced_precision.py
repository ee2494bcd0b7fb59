"""Models whose tensors are float16 or bfloat16 (the model's own types; the CPU target has no reduced-precision
build mode), compared with onnxruntime running the same node in float32 on the same rounded inputs, within
the tolerance table's entry for the reduced type."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto

import tensorkiln as tk
from onnx_case import Const, assert_close, check_reduced, make_model, rand
from tensorkiln.importers.onnx import parse_onnx
from tolerances import EXACT

CASES = {
    # name -> (op, inputs, attributes)
    "add": ("Add", lambda: [rand(3, 1, 7), rand(5, 1, seed=1)], {}),
    "mul": ("Mul", lambda: [rand(13), rand(2, 13, seed=1)], {}),
    "div": ("Div", lambda: [rand(3, 7), rand(7, low=0.5, high=2, seed=1)], {}),
    "relu": ("Relu", lambda: [rand(3, 13)], {}),
    "sigmoid": ("Sigmoid", lambda: [rand(3, 13, low=-5, high=5)], {}),
    "tanh": ("Tanh", lambda: [rand(7, 5)], {}),
    "gelu": ("Gelu", lambda: [rand(3, 13)], {}),
    "matmul": ("MatMul", lambda: [rand(3, 17, low=-1, high=1), rand(17, 5, low=-1, high=1, seed=1)], {}),
    "conv": ("Conv", lambda: [rand(1, 3, 7, 9, low=-1, high=1), rand(5, 3, 3, 3, low=-0.5, high=0.5, seed=1)],
             {"pads": [1, 0, 1, 2]}),
    "softmax": ("Softmax", lambda: [rand(3, 13, low=-4, high=4)], {"axis": -1}),
    "reduce_mean": ("ReduceMean", lambda: [rand(3, 13, 5)], {"axes": [1]}),
    "reduce_max": ("ReduceMax", lambda: [rand(3, 13, 5)], {"axes": [-1], "keepdims": 0}),
    "layer_norm": ("LayerNormalization", lambda: [rand(3, 13), rand(13, seed=1), rand(13, seed=2)], {}),
    "max_pool": ("MaxPool", lambda: [rand(1, 2, 7, 9)], {"kernel_shape": [3, 2], "strides": [2, 2]}),
    "average_pool": ("AveragePool", lambda: [rand(1, 2, 7, 9)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "transpose": ("Transpose", lambda: [rand(2, 7, 3)], {"perm": [2, 0, 1]}),
    "concat": ("Concat", lambda: [rand(2, 3), rand(5, 3, seed=1)], {"axis": 0}),
    "where": ("Where", lambda: [rand(3, 7, dtype=np.bool_), rand(3, 7), rand(7, seed=1)], {}),
    "cast_up": ("Cast", lambda: [rand(3, 13)], {"to": TensorProto.FLOAT}),
    "argmax": ("ArgMax", lambda: [rand(3, 13)], {"axis": 1}),
    "resize": ("Resize", lambda: [rand(1, 2, 3, 5), None, Const(np.array([1, 1, 2, 3], np.float32))],
               {"mode": "linear"}),
}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_reduced_precision_node(case, dtype):
    op, make_inputs, attrs = CASES[case]
    keep = (2,) if op == "Resize" else ()  # Resize's scales stay float32
    check_reduced(op, make_inputs(), dtype, opset=20 if op == "Gelu" else 17, keep=keep, **attrs)


def test_cast_down_to_float16():
    check_reduced("Cast", [rand(3, 13)], "float16", opset=13, keep=(0,), to=TensorProto.FLOAT16)


def test_cast_down_to_bfloat16_rounds_to_nearest_even():
    # onnxruntime cannot hand bfloat16 outputs to numpy: ml_dtypes' rounding is the reference, exactly
    import ml_dtypes

    x = rand(3, 13, low=-300, high=300)
    x[0, :4] = [1.00390625, 1.01171875, -1.00390625, 3.0e-39]  # halfway cases (to even: down, up) and a subnormal
    model, feed = make_model("Cast", [x], {"to": TensorProto.BFLOAT16}, 13)
    engine = tk.Builder(tk.BuilderConfig(opt_level=0)).build(parse_onnx(model))
    produced = engine.create_execution_context().execute({k: torch.from_numpy(v) for k, v in feed.items()})["out0"]
    assert produced.dtype == torch.bfloat16
    assert_close(produced.float().numpy(), x.astype(ml_dtypes.bfloat16).astype(np.float32), "Cast to bfloat16",
                 EXACT)


def test_float16_weights():
    check_reduced("Conv", [rand(1, 3, 7, 5), Const(rand(4, 3, 3, 3, low=-0.5, high=0.5, seed=1))], "float16")


def test_bfloat16_weights():
    check_reduced("Conv", [rand(1, 3, 7, 5), Const(rand(4, 3, 3, 3, low=-0.5, high=0.5, seed=1))], "bfloat16")


def test_bfloat16_weights_keep_their_bits():
    # onnx hands bfloat16 initializers over as ml_dtypes arrays; the engine must hold the very same bits
    import ml_dtypes

    weight = rand(2, 13, low=-300, high=300, seed=4).astype(ml_dtypes.bfloat16)
    weight[0, :3] = [3.0e-39, -0.0, 1.00390625]  # a subnormal, a negative zero, a value with the lowest bit set
    model, feed = make_model("Mul", [rand(2, 13).astype(ml_dtypes.bfloat16), Const(weight)], {}, 13)
    engine = tk.Builder(tk.BuilderConfig(opt_level=0)).build(parse_onnx(model))
    (stored,) = engine.weights.values()
    assert stored.dtype == torch.bfloat16
    assert torch.equal(stored.view(torch.int16), torch.from_numpy(weight.view(np.int16)))
