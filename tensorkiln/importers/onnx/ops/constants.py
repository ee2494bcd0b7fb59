"""Nodes whose outputs are known at build time: Constant, Shape, Size, ConstantOfShape, Range."""
from __future__ import annotations

import math

import numpy as np

from ..registry import converter
from ..tensors import FP8_TYPES


def _constant(ctx, node, value) -> list:
    return [ctx.network.add_constant(None, np.asarray(value), name=node.output[0]).get_output(0)]


@converter("Constant")
def constant(ctx, node):
    for attribute in node.attribute:
        name = attribute.name
        if name == "value":  # checked as initializers are (dims against the stored bytes; FP8 held as float32)
            if attribute.t.data_type in FP8_TYPES and node.output:
                ctx.fp8_types[node.output[0]] = attribute.t.data_type
            return _constant(ctx, node, ctx.attr(node, "value"))
        if name in ("value_float", "value_floats"):
            return _constant(ctx, node, np.array(ctx.attr(node, name), dtype=np.float32))
        if name in ("value_int", "value_ints"):
            return _constant(ctx, node, np.array(ctx.attr(node, name), dtype=np.int64))
    raise ctx.error(node, "only tensor, float(s) and int(s) constants are supported (no sparse or string values)")


@converter("Shape")
def shape(ctx, node):
    dims = ctx.input(node, 0).shape
    start, end = ctx.attr(node, "start", 0), ctx.attr(node, "end", None)
    return _constant(ctx, node, np.array(dims[start:end], dtype=np.int64))


@converter("Size")
def size(ctx, node):
    return _constant(ctx, node, np.array(ctx.input(node, 0).numel, dtype=np.int64))


@converter("ConstantOfShape")
def constant_of_shape(ctx, node):
    dims = ctx.ints(node, 0, "shape")
    fill = ctx.attr(node, "value")
    fill = np.zeros(1, dtype=np.float32) if fill is None else fill
    if any(d < 0 for d in dims):
        raise ctx.shape_error(node, f"its shape {dims} has a negative dimension")
    _check_size(ctx, node, dims, fill.dtype)  # before np.full: a 200-byte model can ask for 10^10 elements
    return _constant(ctx, node, np.full(dims, fill.reshape(-1)[0], dtype=fill.dtype))


@converter("Range")
def range_(ctx, node):
    start, limit, delta = (ctx.require_constant(node, i, what) for i, what in enumerate(("start", "limit", "delta")))
    bounds = [float(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else np.nan for v in (start, limit, delta)]
    if not all(np.isfinite(bounds)) or bounds[2] == 0:
        raise ctx.shape_error(node, f"start, limit and delta must be finite scalars and delta not 0, not {bounds}")
    count = max(math.ceil((bounds[1] - bounds[0]) / bounds[2]), 0)  # the spec's number_of_elements
    _check_size(ctx, node, [count], start.dtype)
    if count == 0:  # numpy's own size arithmetic in float32 can overflow here (start 1e30, limit 1e10)
        return _constant(ctx, node, np.zeros(0, dtype=start.dtype))
    try:
        values = np.arange(start, limit, delta, dtype=start.dtype)
    except (ValueError, OverflowError) as error:  # numpy's size in the dtype's arithmetic may differ from ours
        raise ctx.shape_error(node, f"numpy cannot make a range from {bounds[0]} to {bounds[1]} by {bounds[2]} "
                                    f"in {start.dtype} ({error})") from None
    return _constant(ctx, node, values)


def _check_size(ctx, node, dims, dtype) -> None:
    ctx.network.check_constant(f"output {node.output[0]!r} of ONNX node {ctx.name(node)!r} ({node.op_type})", dims,
                               dtype)
