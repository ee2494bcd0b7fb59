"""A Gemm over flattened tokens becomes one batched matrix product: Reshape [B, S, C] -> [B*S, C], Gemm (a matrix
product with constant weights, and its bias add), Reshape back to [B, S, N], as the TorchScript exporter writes
GPT-2's Conv1D and every Linear it exports as Gemm, turns into MatMul([B, S, C], W) (+ bias) with the [B, S, N]
result. The reshapes go, and with them what stood between the product and its neighbours: fuse_vertical can then
fuse the GELU after the up-projection and the residual add after the down-projection, and the QKV product's split
feeds attention directly.

Exact: the first reshape may also transpose (the head merge before the attention output projection); its rows in
row-major order are the same whether its leading dims are merged or not, and the product works row by row.
"""
from __future__ import annotations

import dataclasses
import math

from ..ir import ops
from ..ir.graph import Network
from .manager import Pass, register_pass
from .pattern import Const, Op, Rule, Var, add, any_of, apply_rules

_RESHAPE_ONLY = (("first_transpose", None), ("second_transpose", None))
FLAT_INPUT = Op(ops.Shuffle.KIND, (Var("x"),), (("second_transpose", None),), name="flat")
PRODUCT = Op(ops.MatrixMultiply.KIND, (FLAT_INPUT, Const(name="weights", uniform=False)), (("transpose_a", False),),
             name="product")
UNFLATTENED = Op(ops.Shuffle.KIND, (any_of(add(PRODUCT, Const(name="bias", uniform=False), name="biased"), PRODUCT),),
                 _RESHAPE_ONLY)


def _unflatten(rewrite, match):
    flat, product, out = match.layer("flat"), match.layer("product"), rewrite.root.outputs[0]
    rows, channels = match["flat"].shape if len(match["flat"].shape) == 2 else (None, None)
    weights, bias = match["weights"], match.get("bias")
    if rows is None or len(weights.shape) != 2 or len(out.shape) < 3 or flat.op.reshape_dims is None:
        return None
    lead, outputs = out.shape[:-1], out.shape[-1]
    if math.prod(lead) != rows or match["product"].shape != (rows, outputs):
        return None
    if bias is not None and (bias.value.size != outputs or bias.value.shape[-1:] != (outputs,)):
        return None  # a bias per row would need the flat layout
    shuffle = dataclasses.replace(flat.op, reshape_dims=(*lead, channels))
    source = flat.inputs[0]
    x = source if shuffle.first_transpose is None and shuffle.reshape_dims == source.shape else \
        rewrite.layer(shuffle, [source], f"{flat.name}.unflat")
    if bias is None:
        return product.op, [x, weights]
    unflat = rewrite.layer(product.op, [x, weights], f"{product.name}.unflat")
    return ops.ElementWise(ops.ElementWiseOperation.SUM), [unflat, bias]


RULES = [
    # reshape(matmul(reshape(x, [B*S, C]), W) [+ bias], [B, S, N])  =>  matmul(x, W) [+ bias]
    Rule("gemm", UNFLATTENED, _unflatten),
]


@register_pass
class UnflattenGemm(Pass):
    name = "unflatten_gemm"

    def run(self, network: Network) -> bool:
        return apply_rules(self, network, RULES)
