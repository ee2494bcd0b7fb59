"""Test helpers: small engines, and edits of an engine's plan that re-seal it (recompute its checksum), as an attacker
or a careless tool would. A re-sealed file passes the checksum, so only the plan validator stands between its
contents and the runtime."""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Callable

import numpy as np

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation, PoolingType, ReduceOperation, UnaryOperation


def split_engine(blob: bytes) -> tuple[dict, bytes]:
    """(safetensors header, data region) of an engine file."""
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + length]), blob[8 + length:]


def join_engine(header: dict, data: bytes, header_text: str | None = None) -> bytes:
    """An engine file from a header (or its raw JSON text) and a data region, padded as safetensors pads."""
    raw = (header_text if header_text is not None else json.dumps(header, separators=(",", ":"))).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def plan_of(blob: bytes) -> dict:
    return json.loads(split_engine(blob)[0]["__metadata__"]["plan"])


def reseal(blob: bytes, plan: dict | str) -> bytes:
    """The engine with its plan replaced by `plan` (a dict, or JSON text used as is) and the checksum recomputed."""
    header, data = split_engine(blob)
    plan_json = plan if isinstance(plan, str) else json.dumps(plan, separators=(",", ":"))
    digest = hashlib.sha256(plan_json.encode())
    digest.update(data)
    header["__metadata__"]["plan"] = plan_json
    header["__metadata__"]["checksum"] = digest.hexdigest()
    return join_engine(header, data)


def edited(blob: bytes, edit: Callable[[dict], object]) -> bytes:
    """The engine re-sealed after `edit(plan)` changed its plan in place."""
    plan = plan_of(blob)
    edit(plan)
    return reseal(blob, plan)


def step_named(plan: dict, name: str) -> dict:
    return next(step for step in plan["steps"] if step["name"] == name)


def step_of_kind(plan: dict, kind: str) -> dict:
    return next(step for step in plan["steps"] if step["op"]["kind"] == kind)


def conv_engine(stride: int = 1) -> tk.Engine:
    """x [1, 3, 9, 7] -> convolution (4 maps, 3x3, pads 1) -> leaky ReLU (fused) -> exp."""
    rng = np.random.default_rng(0)
    network = tk.NetworkDefinition("conv")
    x = network.add_input("x", tk.DataType.FLOAT, (1, 3, 9, 7))
    conv = network.add_convolution(x, 4, (3, 3), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4),
                                   stride=stride, padding=1)
    act = network.add_activation(conv.get_output(0), ActivationType.LEAKY_RELU, alpha=0.1)
    unary = network.add_unary(act.get_output(0), UnaryOperation.EXP)
    network.mark_output(unary.get_output(0))
    return tk.Builder().build(network)


def pointwise_engine() -> tk.Engine:
    """x, y [2, 5] -> (x * y + x) -> relu -> fused into one fused_pointwise step."""
    network = tk.NetworkDefinition("pointwise")
    x = network.add_input("x", tk.DataType.FLOAT, (2, 5))
    y = network.add_input("y", tk.DataType.FLOAT, (2, 5))
    prod = network.add_elementwise(x, y, ElementWiseOperation.PROD)
    total = network.add_elementwise(prod.get_output(0), x, ElementWiseOperation.SUM)
    relu = network.add_activation(total.get_output(0), ActivationType.RELU)
    network.mark_output(relu.get_output(0))
    return tk.Builder().build(network)


def zoo_engine() -> tk.Engine:
    """One step of each layer kind whose attributes an attacker edits most (strides, pads, groups, windows, slices,
    permutations, axes), in a chain that keeps every step:
    x [1, 4, 6, 5] -> grouped convolution -> max pooling -> slice -> transpose -> softmax -> (itself, reduce sum)
    -> concatenation -> pad -> output [1, 4, 6, 5]."""
    rng = np.random.default_rng(0)
    network = tk.NetworkDefinition("zoo")
    x = network.add_input("x", tk.DataType.FLOAT, (1, 4, 6, 5))
    conv = network.add_convolution(x, 4, (3, 3), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4),
                                   padding=1, groups=2)
    pool = network.add_pooling(conv.get_output(0), PoolingType.MAX, (2, 2), stride=1)  # [1, 4, 5, 4]
    sliced = network.add_slice(pool.get_output(0), (0, 0, 1, 0), (1, 4, 3, 4), (1, 1, 1, 1))  # [1, 4, 3, 4]
    shuffle = network.add_shuffle(sliced.get_output(0), first_transpose=(0, 1, 3, 2))  # [1, 4, 4, 3]
    softmax = network.add_softmax(shuffle.get_output(0), axis=3)
    reduce = network.add_reduce(softmax.get_output(0), ReduceOperation.SUM, (2,), keep_dims=True)  # [1, 4, 1, 3]
    concat = network.add_concatenation([softmax.get_output(0), reduce.get_output(0)], axis=2)  # [1, 4, 5, 3]
    pad = network.add_padding(concat.get_output(0), (1, 0), (0, 2))  # [1, 4, 6, 5]
    network.mark_output(pad.get_output(0))
    return tk.Builder().build(network)


def tensor_spec(plan: dict, name: str) -> dict:
    """The plan's `tensors` entry of a produced tensor."""
    return next(spec for spec in plan["tensors"] if spec["name"] == name)


def renamed_everywhere(plan: dict, old: str, new: str) -> None:
    """Rename a tensor in every place the plan names it (specs, step inputs and outputs, memory offsets)."""
    for key in ("inputs", "outputs", "tensors", "weights"):
        for spec in plan[key]:
            if spec["name"] == old:
                spec["name"] = new
    for step in plan["steps"]:
        step["inputs"] = [new if name == old else name for name in step["inputs"]]
        step["outputs"] = [new if name == old else name for name in step["outputs"]]
    offsets = (plan.get("memory") or {}).get("offsets", {})
    if old in offsets:
        offsets[new] = offsets.pop(old)
