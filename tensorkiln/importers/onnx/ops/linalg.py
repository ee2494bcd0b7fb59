"""Gemm, MatMul, Softmax, LogSoftmax."""
from __future__ import annotations

import numpy as np

from ....ir.ops import ElementWiseOperation as E
from ..registry import converter


def _scaled(ctx, node, tensor, factor: float):
    if factor == 1.0:
        return tensor
    constant = ctx.network.add_constant((), np.array(factor, dtype=tensor.dtype.numpy)).get_output(0)
    return ctx.network.add_elementwise(tensor, constant, E.PROD, name=ctx.name(node)).get_output(0)


@converter("Gemm")
def gemm(ctx, node):
    a, b, c = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    product = ctx.network.add_matrix_multiply(a, b, bool(ctx.attr(node, "transA", 0)),
                                              bool(ctx.attr(node, "transB", 0)), name=ctx.name(node)).get_output(0)
    product = _scaled(ctx, node, product, float(ctx.attr(node, "alpha", 1.0)))
    if c is None:
        return [product]
    c = _scaled(ctx, node, c, float(ctx.attr(node, "beta", 1.0)))
    return [ctx.network.add_elementwise(product, c, E.SUM, name=ctx.name(node)).get_output(0)]


@converter("MatMul")
def matmul(ctx, node):
    return [ctx.network.add_matrix_multiply(ctx.input(node, 0), ctx.input(node, 1), name=ctx.name(node)).get_output(0)]


@converter("Softmax", "LogSoftmax")
def softmax(ctx, node):
    x = ctx.input(node, 0)
    log = node.op_type == "LogSoftmax"
    if ctx.opset >= 13:
        axis = ctx.attr(node, "axis", -1)
        return [ctx.network.add_softmax(x, axis, log, name=ctx.name(node)).get_output(0)]
    # before opset 13 the input is coerced to 2D at `axis` and normalized over the whole second part
    axis = ctx.attr(node, "axis", 1) % max(len(x.shape), 1)
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    flat = ctx.network.add_shuffle(x, reshape_dims=(rows, -1), name=ctx.name(node)).get_output(0)
    normalized = ctx.network.add_softmax(flat, 1, log, name=ctx.name(node)).get_output(0)
    return [ctx.network.add_shuffle(normalized, reshape_dims=x.shape, name=ctx.name(node)).get_output(0)]
