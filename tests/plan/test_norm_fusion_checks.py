"""The engine reader's checks of the fused norm layers (fused_matmul_layer_norm, fused_add_layer_norm): a plan that
leaves out the norm's scale or the residual its flag names, or gives a negative or non-finite epsilon, is refused with
a message naming the problem."""
from __future__ import annotations

import math

import pytest

from tensorkiln.ir import ops
from tensorkiln.ir.dtypes import DataType
from tensorkiln.plan.op_checks import OP_CHECKS
from tensorkiln.plan.plan import TensorSpec
from tensorkiln.plan.schema import PlanProblem


def _spec(*shape):
    return TensorSpec("t", DataType.FLOAT, shape)


MATMUL = [_spec(2, 5, 8), _spec(8, 6), _spec(6), _spec(2, 5, 6), _spec(6), _spec(6)]
ADD = [_spec(2, 5, 6), _spec(5, 6), _spec(6), None]


@pytest.mark.parametrize("op, inputs", [(ops.FusedMatMulLayerNorm(residual=True), MATMUL),
                                        (ops.FusedAddLayerNorm(), ADD)])
def test_well_formed_layers_pass(op, inputs):
    OP_CHECKS[op.KIND](op, inputs)


@pytest.mark.parametrize("op, inputs, message", [
    (ops.FusedMatMulLayerNorm(residual=True), [*MATMUL[:4], None, MATMUL[5]], "scale"),
    (ops.FusedMatMulLayerNorm(residual=True), [*MATMUL[:3], None, *MATMUL[4:]], "residual"),
    (ops.FusedMatMulLayerNorm(epsilon=-1.0), MATMUL, "epsilon"),
    (ops.FusedMatMulLayerNorm(epsilon=math.nan), MATMUL, "epsilon"),
    (ops.FusedMatMulLayerNorm(), [MATMUL[0], _spec(2, 8, 6), *MATMUL[2:]], "2-D b"),
    (ops.FusedMatMulLayerNorm(), MATMUL + [_spec(6)], "at most 6"),
    (ops.FusedAddLayerNorm(), [ADD[0], None, *ADD[2:]], "addend"),
    (ops.FusedAddLayerNorm(), [_spec(5, 6), _spec(2, 5, 6), *ADD[2:]], "broadcast"),
    (ops.FusedAddLayerNorm(epsilon=math.inf), ADD, "epsilon"),
    (ops.FusedAddLayerNorm(), [ADD[0], ADD[1], None, None], "scale"),
])
def test_malformed_layers_are_refused(op, inputs, message):
    with pytest.raises(PlanProblem, match=message):
        OP_CHECKS[op.KIND](op, inputs)
