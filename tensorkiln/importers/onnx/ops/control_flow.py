"""If, Loop and Scan, for engines of fixed shapes.

If: a condition known at build time selects one branch, converted inline. A run-time condition converts
both branches and selects each output with a `select` layer (predicated execution: both branches run), which
needs the branches' outputs to agree in shape and dtype.
Loop and Scan: unrolled at build time, which needs a trip count known at build time.
"""
from __future__ import annotations

import numpy as np

from ....errors import TensorkilnError
from ....ir import ops
from ..registry import converter


@converter("If")
def if_(ctx, node):
    condition = ctx.input(node, 0)
    then_graph, else_graph = ctx.attr(node, "then_branch"), ctx.attr(node, "else_branch")
    if condition.is_constant:
        return ctx.convert_subgraph(then_graph if bool(condition.value.reshape(-1)[0]) else else_graph)
    try:
        then_outputs, else_outputs = ctx.convert_subgraph(then_graph), ctx.convert_subgraph(else_graph)
    except TensorkilnError as error:
        raise ctx.error(node, f"its condition is computed at run time, so both branches are built, and one of them "
                              f"cannot take these inputs ({error}); give the inputs that decide the condition a "
                              "fixed value at build time (input_values=..., e.g. a sample rate)") from None
    flag = condition
    if condition.shape:
        flag = ctx.network.add_shuffle(condition, reshape_dims=(), name=ctx.name(node)).get_output(0)
    results = []
    for then_out, else_out in zip(then_outputs, else_outputs):
        if then_out.shape != else_out.shape or then_out.dtype != else_out.dtype:
            raise ctx.error(node, f"its condition is computed at run time and its branches' outputs differ "
                                  f"({then_out.describe()} vs {else_out.describe()}); give the inputs that decide "
                                  "the condition a fixed value at build time (input_values=...)")
        results.append(ctx.network.add_select(flag, then_out, else_out, name=ctx.name(node)).get_output(0))
    return results


def _constant_int(ctx, node, index, what):
    return int(ctx.require_constant(node, index, what).reshape(-1)[0])


@converter("Loop")
def loop(ctx, node):
    body = ctx.attr(node, "body")
    if ctx.input(node, 0) is None:
        raise ctx.error(node, "loops without a trip count are not supported (it must be known at build time)")
    trips = _constant_int(ctx, node, 0, "trip count M")
    condition = ctx.input(node, 1)
    carried = [ctx.input(node, i) for i in range(2, len(node.input))]
    n_scan = len(body.output) - 1 - len(carried)
    scans: list[list] = [[] for _ in range(n_scan)]
    keep_going = True if condition is None else bool(ctx.require_constant(node, 1, "cond").reshape(-1)[0])
    iteration = 0
    while keep_going and iteration < trips:
        counter = ctx.network.add_constant((), np.array(iteration, dtype=np.int64)).get_output(0)
        cond_in = ctx.network.add_constant((), np.array(True)).get_output(0)
        outputs = _call_body(ctx, body, [counter, cond_in, *carried])
        cond_out, carried, scanned = outputs[0], outputs[1:1 + len(carried)], outputs[1 + len(carried):]
        for store, value in zip(scans, scanned):
            store.append(value)
        if not cond_out.is_constant:
            raise ctx.error(node, "its continue condition is computed at run time; only loops whose iterations "
                                  "are known at build time can be unrolled")
        keep_going = bool(cond_out.value.reshape(-1)[0])
        iteration += 1
    results = list(carried)
    for store in scans:
        if not store:
            raise ctx.error(node, "a loop that runs zero times has empty scan outputs, which is not supported")
        expanded = [ctx.network.add_shuffle(v, reshape_dims=(1, *v.shape), name=ctx.name(node)).get_output(0)
                    for v in store]
        results.append(ctx.network.add_concatenation(expanded, 0, name=ctx.name(node)).get_output(0))
    return results


def _call_body(ctx, body, arguments):
    """Bind a body's formal inputs to `arguments` and convert it inline."""
    saved = dict(ctx.tensors)
    for formal, actual in zip(body.input, arguments):
        ctx.tensors[formal.name] = actual
    try:
        return ctx.convert_subgraph(body)
    finally:
        ctx.tensors = saved


@converter("Scan")
def scan(ctx, node):
    body = ctx.attr(node, "body")
    n_scan_inputs = int(ctx.attr(node, "num_scan_inputs"))
    inputs = ctx.inputs(node)
    states, sequences = inputs[:len(inputs) - n_scan_inputs], inputs[len(inputs) - n_scan_inputs:]
    in_axes = ctx.attr(node, "scan_input_axes", [0] * n_scan_inputs)
    in_dirs = ctx.attr(node, "scan_input_directions", [0] * n_scan_inputs)
    length = sequences[0].shape[in_axes[0]]
    n_scan_outputs = len(body.output) - len(states)
    collected: list[list] = [[] for _ in range(n_scan_outputs)]
    for step in range(length):
        elements = []
        for seq, axis, reverse in zip(sequences, in_axes, in_dirs):
            axis = axis % len(seq.shape)
            position = length - 1 - step if reverse else step
            picked = ctx.network.add_layer(ops.Slice((position,), (position + 1,), (axis,), (1,)), [seq],
                                           ctx.name(node)).get_output(0)
            shape = tuple(d for i, d in enumerate(seq.shape) if i != axis)
            elements.append(ctx.network.add_shuffle(picked, reshape_dims=shape, name=ctx.name(node)).get_output(0))
        outputs = _call_body(ctx, body, [*states, *elements])
        states = outputs[:len(states)]
        for store, value in zip(collected, outputs[len(states):]):
            store.append(value)
    out_axes = ctx.attr(node, "scan_output_axes", [0] * n_scan_outputs)
    out_dirs = ctx.attr(node, "scan_output_directions", [0] * n_scan_outputs)
    results = list(states)
    for store, axis, reverse in zip(collected, out_axes, out_dirs):
        values = list(reversed(store)) if reverse else store
        rank = len(values[0].shape) + 1
        axis = axis % rank
        expanded = [ctx.network.add_shuffle(v, reshape_dims=v.shape[:axis] + (1,) + v.shape[axis:],
                                            name=ctx.name(node)).get_output(0) for v in values]
        results.append(ctx.network.add_concatenation(expanded, axis, name=ctx.name(node)).get_output(0))
    return results
