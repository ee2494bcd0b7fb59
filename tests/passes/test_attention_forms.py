"""Attention in the forms real exporters write becomes one `attention` layer per attention block (issue 21), and the
engine's outputs match onnxruntime.

Hugging Face models (random weights, tiny configurations, two layers) are exported inside the tests as a user would:
the TorchScript exporter at opset 17 and, where it works here, the dynamo exporter (opset 18, and opset 23 where it
writes ONNX's own Attention op). The forms each covers: BERT, RoBERTa and DistilBERT with sdpa (q and k each scaled
by a Mul, a boolean padding mask through Where(mask, 0, dtype min), the IsNaN + Where guard after Softmax) and eager
attention (the scale after the matmul); GPT-2 (its Conv1D: a Gemm and a Split into Q, K, V; a causal mask combined
with the padding mask); ViT (no mask); a Llama-like decoder with grouped-query heads and a Qwen2-like one with a
single K/V head, eager (repeat_kv: Unsqueeze, Expand, Reshape of K and V). Hand-written graphs cover the forms no
small export here writes: a causal mask built with Trilu (folded to a constant, it becomes the layer's causal flag),
Where(keep, scores, min), a fill too small to mask (left alone), and the NaN guard on fully masked rows; torch's sdpa
with is_causal gives the causal flag through both exporters.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

transformers = pytest.importorskip("transformers", reason="needs transformers (pip install transformers)")

MAX_ABS_ERROR = 1e-4  # FP32 engine against onnxruntime
LAYERS, SEQUENCE, VOCAB = 2, 16, 1000
_SMALL = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=LAYERS)


def _bert(attention):
    return transformers.BertModel(transformers.BertConfig(**_SMALL, vocab_size=VOCAB, max_position_embeddings=64,
                                                          attn_implementation=attention))


def _roberta(attention):
    return transformers.RobertaModel(transformers.RobertaConfig(**_SMALL, vocab_size=VOCAB, max_position_embeddings=64,
                                                                attn_implementation=attention))


def _distilbert(attention):
    return transformers.DistilBertModel(transformers.DistilBertConfig(
        n_layers=LAYERS, dim=64, n_heads=4, hidden_dim=128, vocab_size=VOCAB, max_position_embeddings=64,
        attn_implementation=attention))


def _gpt2(attention):
    return transformers.GPT2Model(transformers.GPT2Config(
        n_layer=LAYERS, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0,
        attn_implementation=attention))


def _llama(attention):  # grouped-query: 4 query heads share 2 K/V heads
    return transformers.LlamaModel(transformers.LlamaConfig(
        **_SMALL, num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, attn_implementation=attention))


def _qwen2(attention):  # multi-query: 4 query heads share 1 K/V head; Q, K and V projections with biases
    return transformers.Qwen2Model(transformers.Qwen2Config(
        **_SMALL, num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=64, attn_implementation=attention))


def _vit(attention):
    return transformers.ViTModel(transformers.ViTConfig(**_SMALL, image_size=32, patch_size=8,
                                                        attn_implementation=attention))


MODELS = {"bert": _bert, "roberta": _roberta, "distilbert": _distilbert, "gpt2": _gpt2, "llama": _llama,
          "qwen2": _qwen2, "vit": _vit}


class _LastHiddenState(torch.nn.Module):
    """The model's last hidden state from (input_ids, attention_mask), or from pixel_values for ViT."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        if isinstance(self.model, transformers.ViTModel):
            return self.model(pixel_values=inputs[0]).last_hidden_state
        extra = {"use_cache": False} if not isinstance(self.model, (transformers.BertModel, transformers.RobertaModel,
                                                                    transformers.DistilBertModel)) else {}
        return self.model(input_ids=inputs[0], attention_mask=inputs[1], **extra).last_hidden_state


def _inputs(name: str) -> dict[str, torch.Tensor]:
    if name == "vit":
        return {"pixel_values": torch.randn(2, 3, 32, 32)}
    ids = torch.randint(3, VOCAB, (2, SEQUENCE))
    mask = torch.ones(2, SEQUENCE, dtype=torch.int64)
    mask[1, SEQUENCE // 2:] = 0  # the second sequence is padded
    return {"input_ids": ids, "attention_mask": mask}


def _export(name: str, attention: str, exporter: str, path) -> dict[str, np.ndarray]:
    if exporter != "torchscript":
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install onnxscript)")
    torch.manual_seed(0)
    module = _LastHiddenState(MODELS[name](attention).eval()).eval()
    with torch.no_grad():  # transformers initializes biases to 0 and norms to 1: the graph would lose its bias adds
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    feed = _inputs(name)
    opset = {"torchscript": 17, "dynamo": 18, "dynamo23": 23}[exporter]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(feed.values()), str(path), dynamo=exporter != "torchscript",
                          opset_version=opset, input_names=list(feed))
    return {key: value.numpy() for key, value in feed.items()}


def _build_and_compare(path, feed: dict[str, np.ndarray]):
    import onnxruntime as ort

    engine = tk.Builder().build(parse_onnx(path))
    (actual,) = tk.Runtime().deserialize(engine.serialize()).create_execution_context().execute(feed).values()
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    assert actual.shape == expected.shape and np.isfinite(expected).all()
    error = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert error <= MAX_ABS_ERROR, f"max |tensorkiln - onnxruntime| = {error:.2e} > {MAX_ABS_ERROR}"
    return engine


CASES = [("bert", "sdpa", "torchscript"), ("bert", "eager", "torchscript"), ("bert", "sdpa", "dynamo"),
         ("roberta", "sdpa", "torchscript"), ("distilbert", "sdpa", "torchscript"), ("gpt2", "sdpa", "torchscript"),
         ("gpt2", "eager", "torchscript"), ("vit", "sdpa", "torchscript"), ("llama", "sdpa", "torchscript"),
         ("llama", "sdpa", "dynamo23"), ("qwen2", "eager", "torchscript")]


@pytest.mark.parametrize("name, attention, exporter", CASES, ids=["-".join(case) for case in CASES])
def test_hugging_face_attention_becomes_one_layer_per_block(tmp_path, name, attention, exporter):
    path = tmp_path / f"{name}.onnx"
    feed = _export(name, attention, exporter, path)
    engine = _build_and_compare(path, feed)
    kinds = [step.kind for step in engine.plan.steps]
    layers = [step.op for step in engine.plan.steps if step.kind == "attention"]
    assert len(layers) == LAYERS and "softmax" not in kinds and "onnx_attention" not in kinds
    counts = engine.plan.build_info["pass_counts"]
    if exporter == "dynamo23":  # ONNX Attention nodes, converted to the fused layer by the importer
        nodes = onnx.load(str(path), load_external_data=False).graph.node
        assert sum(node.op_type == "Attention" for node in nodes) == LAYERS
        assert "recognize_attention.attention" not in counts
    else:
        assert counts["recognize_attention.attention"] == LAYERS
    assert all(op.scale == pytest.approx(0.25, rel=1e-6) for op in layers)  # 1 / sqrt(head size 16)
    assert all(op.has_mask == (name != "vit") for op in layers)
    if attention == "sdpa" and name != "vit" and exporter != "dynamo23":  # the exporter's IsNaN + Where guard
        assert all(op.nan_to_zero for op in layers)
    assert all(op.grouped_kv == (name in ("llama", "qwen2")) for op in layers)
    if name != "vit" and exporter != "dynamo23":  # every layer's Where of the one padding mask: computed once
        assert counts["recognize_attention.shared_mask"] == LAYERS - 1 and kinds.count("select") == 1
    if name in ("bert", "roberta", "distilbert") and exporter == "torchscript":
        # the padding mask stays one row per sequence ([B, 1, 1, S]): the And with an all-True constant and the
        # Expand that made it [B, 1, S, S] are left out, so the kernels read one mask row for every query
        specs = {spec.name: spec.shape for spec in (*engine.plan.tensors, *engine.plan.inputs)}
        masks = [specs[step.inputs[3]] for step in engine.plan.steps if step.kind == "attention"]
        assert masks == [(2, 1, 1, SEQUENCE)] * LAYERS
    if name == "gpt2":  # Conv1D's Gemm over flattened tokens unflattened: its GELU and residual adds fused into it
        assert counts["unflatten_gemm.gemm"] == 4 * LAYERS and "activation" not in kinds
        # (the last block's FFN down-projection also takes the final LayerNorm: fuse_matmul_layer_norm)
        assert kinds.count("fused_matmul") + kinds.count("fused_matmul_layer_norm") == 4 * LAYERS
        assert "matrix_multiply" not in kinds
    if name in ("llama", "qwen2"):  # K and V read unrepeated: their repeats (an Expand each, 2 * LAYERS) are gone
        assert kinds.count("expand") <= 1 and counts["recognize_attention.grouped_kv"] == LAYERS  # the mask's


# ---- hand-written graphs: forms no small export here writes ------------------------------------------------------
B, H, S, D = 2, 3, 7, 8
_FLOAT_MIN = float(np.finfo(np.float32).min)


def _graph(nodes, inputs, initializers=(), name="forms"):
    """q, k, v [B, H, S, D] (and `inputs`) -> softmax(scores) @ v, with the score nodes given (named 'scores_out')."""
    head = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in "qkv"]
    tail = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["raw"]),
            helper.make_node("Mul", ["raw", "scale"], ["scores"])]
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [D ** -0.5])
    graph = helper.make_graph(tail + nodes, name, head + inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, H, S, D])],
                              [scale, *initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _softmax_then_values(probabilities="probs"):
    return [helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
            helper.make_node("MatMul", [probabilities, "v"], ["out"])]


def _qkv(seed=0):
    generator = np.random.default_rng(seed)
    return {n: generator.standard_normal((B, H, S, D)).astype(np.float32) for n in "qkv"}


def _engine_for(tmp_path, model, feed):
    path = tmp_path / "forms.onnx"
    onnx.save(model, str(path))
    engine = _build_and_compare(path, feed)
    return [step.op for step in engine.plan.steps if step.kind == "attention"], [s.kind for s in engine.plan.steps]


@pytest.mark.parametrize("fill", [float("-inf"), _FLOAT_MIN], ids=["minus_inf", "float_min"])
def test_trilu_causal_mask_becomes_the_causal_flag(tmp_path, fill):
    """Where(Trilu(ones) == 0, fill, scores): the mask folds to a constant, which is exactly the causal pattern."""
    ones = helper.make_tensor("ones", TensorProto.FLOAT, [S, S], [1.0] * S * S)
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    fill_value = helper.make_tensor("fill", TensorProto.FLOAT, [], [fill])
    nodes = [helper.make_node("Trilu", ["ones"], ["lower"], upper=0),
             helper.make_node("Equal", ["lower", "zero"], ["above"]),
             helper.make_node("Where", ["above", "fill", "scores"], ["masked"]), *_softmax_then_values()]
    (op,), kinds = _engine_for(tmp_path, _graph(nodes, [], [ones, zero, fill_value]), _qkv())
    assert op.causal and not op.has_mask and "softmax" not in kinds


def test_where_keep_scores_else_min_becomes_an_additive_mask(tmp_path):
    """Where(keep, scores, float32 min) with a boolean keep input (a padding mask), and the NaN guard."""
    keep = helper.make_tensor_value_info("keep", TensorProto.BOOL, [B, 1, 1, S])
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [], [_FLOAT_MIN])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("Where", ["keep", "scores", "fill"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
             helper.make_node("IsNaN", ["probs"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "probs"], ["guarded"]),
             helper.make_node("MatMul", ["guarded", "v"], ["out"])]
    feed = {**_qkv(1), "keep": np.ones((B, 1, 1, S), dtype=bool)}
    feed["keep"][1, ..., 4:] = False
    (op,), kinds = _engine_for(tmp_path, _graph(nodes, [keep], [fill, zero]), feed)
    assert op.has_mask and op.nan_to_zero and not op.causal and "softmax" not in kinds


def test_nan_guard_gives_zeros_for_fully_masked_rows(tmp_path):
    """An additive -inf mask that masks every key of batch 1: the softmax is NaN there, the guard makes it zeros, and
    so must the fused layer (onnxruntime runs the graph)."""
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [B, 1, 1, S])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("Add", ["scores", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
             helper.make_node("IsNaN", ["probs"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "probs"], ["guarded"]),
             helper.make_node("MatMul", ["guarded", "v"], ["out"])]
    feed = {**_qkv(2), "mask": np.zeros((B, 1, 1, S), dtype=np.float32)}
    feed["mask"][1] = -np.inf
    feed["mask"][0, ..., 5:] = -np.inf
    (op,), _ = _engine_for(tmp_path, _graph(nodes, [mask], [zero]), feed)
    assert op.has_mask and op.nan_to_zero


def test_a_fill_that_does_not_mask_is_left_alone(tmp_path):
    """Where(keep, scores, -100): a masked score is -100, not one far below every score; no attention layer (an
    additive mask would give scores - 100 there), and the graph's own layers compute it."""
    keep = helper.make_tensor_value_info("keep", TensorProto.BOOL, [B, 1, 1, S])
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [], [-100.0])
    nodes = [helper.make_node("Where", ["keep", "scores", "fill"], ["masked"]), *_softmax_then_values()]
    feed = {**_qkv(3), "keep": np.ones((B, 1, 1, S), dtype=bool)}
    feed["keep"][0, ..., 2:] = False
    ops_found, kinds = _engine_for(tmp_path, _graph(nodes, [keep], [fill]), feed)
    assert not ops_found and "softmax" in kinds


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_sdpa_is_causal_becomes_the_causal_flag(tmp_path, dynamo):
    """torch's scaled_dot_product_attention(is_causal=True): each exporter writes the causal mask its own way (the
    TorchScript exporter a Trilu of ones, the dynamo exporter comparisons of Range); folded, it is the flag."""
    if dynamo:
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install onnxscript)")

    class Causal(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    feed = _qkv(4)
    path = tmp_path / "causal.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Causal(), tuple(torch.from_numpy(feed[n]) for n in "qkv"), str(path), dynamo=dynamo,
                          opset_version=18 if dynamo else 17, input_names=list("qkv"))
    engine = _build_and_compare(path, feed)
    (op,) = [step.op for step in engine.plan.steps if step.kind == "attention"]
    assert op.causal and not op.has_mask and len(engine.plan.steps) == 1


# ---- the engine reader: the new attention fields --------------------------------------------------------------------
def test_engine_reader_checks_grouped_kv_head_counts_and_reads_old_attention_layers():
    from tensorkiln.ir import ops
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.ir.serialize import op_from_json
    from tensorkiln.plan import op_checks
    from tensorkiln.plan.plan import TensorSpec
    from tensorkiln.plan.schema import PlanProblem

    def spec(*shape):
        return TensorSpec("t", DataType.FLOAT, shape)

    grouped = ops.Attention(0.25, grouped_kv=True)
    op_checks.check_op(grouped, (spec(2, 8, 5, 16), spec(2, 2, 5, 16), spec(2, 2, 5, 16)))
    with pytest.raises(PlanProblem, match="divides"):
        op_checks.check_op(grouped, (spec(2, 8, 5, 16), spec(2, 3, 5, 16), spec(2, 3, 5, 16)))
    with pytest.raises(PlanProblem, match="head dim"):
        op_checks.check_op(grouped, (spec(5, 16), spec(5, 16), spec(5, 16)))
    # an engine written before nan_to_zero and grouped_kv existed: its attention layers keep their meaning
    old = op_from_json({"kind": "attention", "attrs": {"scale": 0.5, "has_mask": True, "causal": False}})
    assert old == ops.Attention(0.5, has_mask=True)
