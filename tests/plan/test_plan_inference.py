"""The validator's fast shape inference (plan/validate.py infer_outputs: elementwise kinds by broadcasting and one
element per input, Resize from its attributes, fused layers without their activations) agrees with the reference
kernels on the meta device, on every opcode and dtype: a difference would refuse valid engines or pass wrong ones.
(For CPU engines it is stricter: it also refuses dtypes the CPU kernel cannot run, which the meta device passes.)"""
from __future__ import annotations

import itertools

import pytest
import torch

from tensorkiln.ir import ops
from tensorkiln.ir.dtypes import DataType
from tensorkiln.ir.infer import InferredOutput, infer_on_meta
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation, ResizeMode, UnaryOperation
from tensorkiln.plan import validate
from tensorkiln.plan.plan import TensorSpec

F32, F16, I32, I64, BOOL = DataType.FLOAT, DataType.HALF, DataType.INT32, DataType.INT64, DataType.BOOL


def spec(dtype: DataType, *shape: int) -> TensorSpec:
    return TensorSpec("t", dtype, tuple(shape))


def outcome(infer, op, inputs) -> object:
    """(dtype, shape) of the one output, or 'refused' where inference raises."""
    try:
        (output,) = infer(op, inputs)
    except Exception:  # the validator turns any exception of inference into a refusal
        return "refused"
    return output.dtype, tuple(output.shape)


def assert_agrees(op, inputs) -> None:
    """For a CUDA engine, the fast inference agrees with the meta device; for a CPU engine too, except that it also
    refuses what the CPU kernel refuses when run on tensors of the full shapes (a bit shift of floats)."""
    validate._cached_inference.cache_clear()
    expected = outcome(infer_on_meta, op, inputs)
    assert outcome(lambda o, i: validate.infer_outputs(o, i, "cuda"), op, inputs) == expected, (op, inputs)
    on_cpu = outcome(validate.infer_outputs, op, inputs)
    if on_cpu != expected:
        assert on_cpu == "refused" and outcome(run_on_cpu, op, inputs) == "refused", (op, inputs, expected)
    assert outcome(validate.infer_outputs, op, inputs) == on_cpu  # and again, from the cache


def run_on_cpu(op, inputs):
    from tensorkiln.kernels.registry import get_kernel

    tensors = [None if s is None else torch.ones(s.shape, dtype=s.dtype.torch) for s in inputs]
    return [InferredOutput(DataType.from_torch(t.dtype), tuple(t.shape), None)
            for t in get_kernel(op.KIND, "cpu")(op, tensors)]


BINARY_INPUTS = [
    (spec(F32, 2, 1, 3), spec(F32, 4, 1)), (spec(I64, 3), spec(I64, 2, 3)), (spec(F16, 2, 3), spec(F32, 1)),
    (spec(I32, 2, 3), spec(F32, 2, 3)), (spec(BOOL, 5), spec(BOOL, 5)), (spec(F32, 2, 3), spec(F32, 4, 3)),
    (spec(F32, 0, 3), spec(F32, 1, 3)),
]


@pytest.mark.parametrize("operation", list(ElementWiseOperation), ids=lambda o: o.value)
def test_elementwise(operation):
    for inputs in BINARY_INPUTS:
        assert_agrees(ops.ElementWise(operation), list(inputs))


@pytest.mark.parametrize("operation", list(UnaryOperation), ids=lambda o: o.value)
def test_unary(operation):
    for dtype in (F32, F16, I32, BOOL):
        assert_agrees(ops.Unary(operation), [spec(dtype, 2, 3)])


@pytest.mark.parametrize("activation", list(ActivationType), ids=lambda a: a.value)
def test_activation(activation):
    for dtype, (alpha, beta) in itertools.product((F32, F16, I32), ((0.1, 0.5), (float("-inf"), 6.0))):
        assert_agrees(ops.Activation(activation, alpha, beta), [spec(dtype, 3, 1, 2)])


def test_cast():
    for source, target in itertools.product((F32, I64, BOOL), list(DataType)):
        assert_agrees(ops.Cast(target), [spec(source, 2, 2)])


@pytest.mark.parametrize("program", [
    ("t0 = prod in0 in1", "t1 = sum t0 in0", "t2 = relu t1 0.0 0.0", "out = t2"),
    ("t0 = neg in1", "out = t0"),  # in0 is given but not read: the output is in1's shape
    ("out = in0",),
    ("t0 = less in0 in2", "out = t0"),
    ("t0 = exp in0", "t1 = div t0 in1", "out = t1"),
    # found by the hour's fuzzing: the result reads in2 only; the dead t0 over in0 and in1 shapes nothing
    ("t0 = prod in0 in1", "out = in2"),
    ("t0 = prod in0 in1", "t1 = neg in2", "out = t1"),
])
def test_fused_pointwise(program):
    for inputs in ([spec(F32, 2, 1, 3), spec(F32, 4, 1), spec(F32, 3)], [spec(F16, 5), spec(F32, 2, 5), spec(I64, 1)],
                   [spec(F32, 2, 3), spec(F32, 4, 3), spec(F32, 3)]):
        assert_agrees(ops.FusedPointwise(program), inputs)


@pytest.mark.parametrize("mode", list(ResizeMode), ids=lambda m: m.value)
def test_resize(mode):
    for dtype, shape, scales in ((F32, (1, 2, 5, 4), (1.0, 1.0, 2.0, 0.5)), (DataType.UINT8, (1, 1, 3, 3),
                                                                           (1.0, 1.0, 1.0, 1.0))):
        output = (1, 2, 10, 2) if shape[1] == 2 else (1, 1, 3, 3)
        assert_agrees(ops.Resize(mode, output, scales), [spec(dtype, *shape)])


@pytest.mark.parametrize("activation, post", [(ActivationType.CLIP, None), (ActivationType.LEAKY_RELU,
                                                                              ActivationType.SIGMOID),
                                              (None, ActivationType.GELU_ERF)])
def test_fused_layers_without_their_activations(activation, post):
    conv = ops.FusedConvolution((2, 1), (1, 0, 1, 0), (1, 1), 1, activation=activation, alpha=0.0, beta=6.0,
                                residual=True, post_activation=post)
    for x_dtype in (F32, F16):
        assert_agrees(conv, [spec(x_dtype, 1, 3, 7, 5), spec(x_dtype, 4, 3, 3, 3), spec(x_dtype, 4),
                             spec(x_dtype, 1, 4, 4, 4), None])
        assert_agrees(conv, [spec(x_dtype, 1, 3, 7, 5), spec(x_dtype, 4, 3, 3, 3), spec(x_dtype, 4),
                             spec(x_dtype, 1, 4, 5, 4), None])  # a residual of another shape: refused both ways
    matmul = ops.FusedMatMul(False, True, activation=activation, alpha=0.0, beta=6.0, post_activation=post)
    assert_agrees(matmul, [spec(F32, 2, 3, 8), spec(F32, 5, 8), spec(F32, 5)])
