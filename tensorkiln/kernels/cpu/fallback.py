"""ONNX nodes tensorkiln has no converter for, run by onnx's reference implementation (onnx.reference).

Built only with allow_fallback: slow (numpy, one node at a time, a host round trip on other devices), but the
engine builds, serializes and loads. The layer stores the NodeProto (serialized, base64): data, never code.
"""
from __future__ import annotations

import base64
import functools
from typing import Sequence

import numpy as np
import torch

from ...ir import ops
from ...ir.dtypes import DataType
from ..registry import kernel


@functools.lru_cache(maxsize=256)
def _evaluator(node_b64: str, opset: int):
    import onnx
    from onnx.reference import ReferenceEvaluator

    node = onnx.NodeProto.FromString(base64.b64decode(node_b64))
    inputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.input if n]
    outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n]
    graph = onnx.helper.make_graph([node], f"fallback_{node.op_type}", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model), [n for n in node.input if n], [n for n in node.output if n]


def run_node(node_b64: str, opset: int, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Outputs of the node on numpy inputs (None for an omitted optional input); FP8 outputs (ml_dtypes' float8
    types, which tensorkiln does not hold) come back as float32 arrays of the same values."""
    evaluator, input_names, _ = _evaluator(node_b64, opset)
    present = [value for value in inputs if value is not None]
    return [_held(np.asarray(out)) for out in evaluator.run(None, dict(zip(input_names, present)))]


def _held(array: np.ndarray) -> np.ndarray:
    """The array in a dtype tensorkiln holds: FP8 (every value of which is a float32 one) widened to float32."""
    return array.astype(np.float32) if array.dtype.name.startswith("float8") else array


def encode_node(node) -> str:
    return base64.b64encode(node.SerializeToString()).decode("ascii")


def fallback_op(node, opset: int, inputs: Sequence) -> ops.OnnxFallback:
    """The layer attributes of a fallback node; its output shapes and dtypes come from running it once on the
    inputs' build-time values where known and on stand-ins (ones) of the right shapes elsewhere."""
    encoded = encode_node(node)
    stand_ins = [None if t is None else (t.value if t.is_constant else np.ones(t.shape, t.dtype.numpy))
                 for t in inputs]
    outputs = run_node(encoded, opset, stand_ins)
    return ops.OnnxFallback(node.op_type, encoded, opset, tuple(DataType.from_numpy(o.dtype) for o in outputs),
                            tuple(tuple(int(d) for d in o.shape) for o in outputs))


@kernel(ops.OnnxFallback)
def onnx_fallback(op: ops.OnnxFallback, inputs):
    present = [t for t in inputs if t is not None]
    device = present[0].device if present else torch.device("cpu")
    if device.type == "meta":
        return [torch.empty(shape, dtype=dtype.torch, device="meta")
                for shape, dtype in zip(op.output_shapes, op.output_dtypes)]
    arrays = [None if t is None else t.detach().cpu().numpy() for t in inputs]
    outputs = run_node(op.node, op.opset, arrays)
    # np.require keeps a 0-d output 0-d (np.ascontiguousarray would make it shape (1,)) and makes the array one
    # torch can take over: C-contiguous and writable
    return [torch.from_numpy(np.require(np.asarray(o, dtype=dtype.numpy), requirements=["C", "W"])).to(device)
            for o, dtype in zip(outputs, op.output_dtypes)]
