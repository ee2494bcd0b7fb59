"""unflatten_gemm: Reshape [B, S, C] -> [B*S, C], Gemm, Reshape back to [B, S, N] (the TorchScript exporter's
Linear-as-Gemm, GPT-2's Conv1D) becomes one batched matrix product, so the GELU and the residual add around it fuse
into it; outputs against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.passes.manager import pipeline_with

B, S, C, N = 2, 5, 12, 20


def _model(trans_b: int, merge_heads: bool):
    """x [B, S, C] (or [B, 3, S, 4] heads to merge first) -> flatten -> Gemm (+ bias) -> unflatten -> Tanh (an
    activation to fuse) -> + a residual r [B, S, N]."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((N, C) if trans_b else (C, N)).astype(np.float32)
    inits = [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.reshape(-1)),
             helper.make_tensor("bias", TensorProto.FLOAT, [N], rng.standard_normal(N).astype(np.float32)),
             helper.make_tensor("flat_shape", TensorProto.INT64, [2], [B * S, C]),
             helper.make_tensor("shape", TensorProto.INT64, [3], [B, S, N])]
    nodes = []
    source = "x"
    if merge_heads:  # [B, H, S, D] -> [B, S, H, D] -> flatten, as before GPT-2's attention output projection
        nodes.append(helper.make_node("Transpose", ["x"], ["merged"], perm=[0, 2, 1, 3]))
        source = "merged"
    nodes += [helper.make_node("Reshape", [source, "flat_shape"], ["flat"]),
              helper.make_node("Gemm", ["flat", "w", "bias"], ["product"], transB=trans_b),
              helper.make_node("Reshape", ["product", "shape"], ["unflat"]),
              helper.make_node("Tanh", ["unflat"], ["act"]),
              helper.make_node("Add", ["act", "r"], ["y"])]
    x_shape = [B, 3, S, C // 3] if merge_heads else [B, S, C]
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
                                              helper.make_tensor_value_info("r", TensorProto.FLOAT, [B, S, N])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, N])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), x_shape


@pytest.mark.parametrize("trans_b", [0, 1], ids=["weights_kn", "weights_nk"])
@pytest.mark.parametrize("merge_heads", [False, True], ids=["plain", "head_merge"])
def test_flattened_gemm_becomes_one_product_with_its_neighbours_fused(tmp_path, trans_b, merge_heads):
    import onnxruntime as ort

    model, x_shape = _model(trans_b, merge_heads)
    path = tmp_path / "gemm.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal(x_shape).astype(np.float32),
            "r": rng.standard_normal((B, S, N)).astype(np.float32)}
    engine = tk.Builder().build(parse_onnx(path))
    assert engine.plan.build_info["pass_counts"]["unflatten_gemm.gemm"] == 1
    kinds = [step.kind for step in engine.plan.steps]
    # one product with bias, tanh and the residual in its epilogue; a shuffle only to merge the heads
    assert kinds == (["shuffle", "fused_matmul"] if merge_heads else ["fused_matmul"])
    (actual,) = engine.create_execution_context().execute(feed).values()
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    without = tk.Builder(tk.BuilderConfig(passes=pipeline_with("-unflatten_gemm"))).build(parse_onnx(path))
    assert len(without.plan.steps) > len(engine.plan.steps)  # the reshapes kept the epilogue from fusing
