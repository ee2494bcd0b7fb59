"""The com.microsoft transformer operators (importers/onnx/ops/contrib_transformer.py) against onnxruntime's CPU
kernels: models built with onnx.helper, random inputs with a padded sequence, FP32 within 1e-4. The fused
attention operators must become one `attention` layer each."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorkiln as tk
from tensorkiln.importers.onnx.context import ConversionError
from tensorkiln.importers.onnx import parse_onnx

ort = pytest.importorskip("onnxruntime")

MAX_ABS_ERROR = 1e-4
B, S, HIDDEN, HEADS = 2, 7, 32, 4
FLOAT, INT32 = TensorProto.FLOAT, TensorProto.INT32


def _random(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "contrib", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _info(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _weights(name, value):
    return helper.make_tensor(name, FLOAT if value.dtype == np.float32 else INT32, value.shape, value.reshape(-1))


def _compare(tmp_path, model, feed):
    """Build the model, run it, compare every output with onnxruntime; returns the plan's steps."""
    path = tmp_path / "contrib.onnx"
    onnx.save(model, str(path))
    engine = tk.Builder().build(parse_onnx(path))
    actual = list(tk.Runtime().deserialize(engine.serialize()).create_execution_context().execute(feed).values())
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.isfinite(want).all() if want.dtype.kind == "f" else True
        error = float(np.max(np.abs(got.astype(np.float64) - want)))
        assert error <= MAX_ABS_ERROR, f"max |tensorkiln - onnxruntime| = {error:.2e}"
    return engine.plan.steps


def _padding(kind: str) -> np.ndarray:
    """mask_index forms: raw [B, S] with batch 1 padded after 4 tokens, end positions [B], or [B, S, S]."""
    raw = np.ones((B, S), dtype=np.int32)
    raw[1, 4:] = 0
    if kind == "ends":
        return raw.sum(1).astype(np.int32)
    if kind == "3d":
        return np.repeat(raw[:, None, :], S, axis=1)
    return raw


@pytest.mark.parametrize("mask_kind", ["none", "raw", "ends", "3d"])
@pytest.mark.parametrize("unidirectional", [0, 1], ids=["bidirectional", "causal"])
def test_attention(tmp_path, mask_kind, unidirectional):
    inputs = ["x", "w", "b"] + (["mask"] if mask_kind != "none" else [])
    node = helper.make_node("Attention", inputs, ["y"], domain="com.microsoft", num_heads=HEADS,
                            unidirectional=unidirectional)
    feeds = [_info("x", FLOAT, [B, S, HIDDEN])]
    feed = {"x": _random(B, S, HIDDEN)}
    if mask_kind != "none":
        feed["mask"] = _padding(mask_kind)
        feeds.append(_info("mask", INT32, list(feed["mask"].shape)))
    initializers = [_weights("w", _random(HIDDEN, 3 * HIDDEN, seed=1, scale=0.3)), _weights("b", _random(3 * HIDDEN,
                                                                                                       seed=2))]
    steps = _compare(tmp_path, _model([node], feeds, [_info("y", FLOAT, [B, S, HIDDEN])], initializers), feed)
    (attention,) = [s.op for s in steps if s.kind == "attention"]
    assert attention.causal == bool(unidirectional) and attention.has_mask == (mask_kind != "none")
    assert attention.scale == pytest.approx((HIDDEN // HEADS) ** -0.5)


def test_attention_with_qkv_hidden_sizes_scale_and_attention_bias(tmp_path):
    """V narrower than Q and K, an explicit scale, and an additive [1, H, S, S] attention bias with the raw mask."""
    sizes = [HIDDEN, HIDDEN, 16]
    node = helper.make_node("Attention", ["x", "w", "b", "mask", "", "bias"], ["y"], domain="com.microsoft",
                            num_heads=HEADS, qkv_hidden_sizes=sizes, scale=0.3)
    feed = {"x": _random(B, S, HIDDEN), "mask": _padding("raw"), "bias": _random(1, HEADS, S, S, seed=3)}
    feeds = [_info("x", FLOAT, [B, S, HIDDEN]), _info("mask", INT32, [B, S]), _info("bias", FLOAT, [1, HEADS, S, S])]
    initializers = [_weights("w", _random(HIDDEN, sum(sizes), seed=1, scale=0.3)), _weights("b", _random(sum(sizes)))]
    steps = _compare(tmp_path, _model([node], feeds, [_info("y", FLOAT, [B, S, 16])], initializers), feed)
    assert [s.kind for s in steps].count("attention") == 1


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("mask_kind", ["none", "raw", "ends"])
def test_multi_head_attention(tmp_path, with_bias, mask_kind):
    """Cross attention: 7 queries over 5 keys; the key padding mask masks keys."""
    keys = 5
    inputs = ["q", "k", "v", "bias" if with_bias else "", "mask" if mask_kind != "none" else ""]
    node = helper.make_node("MultiHeadAttention", inputs, ["y"], domain="com.microsoft", num_heads=HEADS)
    feed = {"q": _random(B, S, HIDDEN), "k": _random(B, keys, HIDDEN, seed=1), "v": _random(B, keys, HIDDEN, seed=2)}
    feeds = [_info(n, FLOAT, list(feed[n].shape)) for n in "qkv"]
    if mask_kind != "none":
        raw = np.ones((B, keys), dtype=np.int32)
        raw[1, 3:] = 0
        feed["mask"] = raw if mask_kind == "raw" else raw.sum(1).astype(np.int32)
        feeds.append(_info("mask", INT32, list(feed["mask"].shape)))
    initializers = [_weights("bias", _random(3 * HIDDEN, seed=4))] if with_bias else []
    steps = _compare(tmp_path, _model([node], feeds, [_info("y", FLOAT, [B, S, HIDDEN])], initializers), feed)
    assert [s.kind for s in steps].count("attention") == 1 and "softmax" not in [s.kind for s in steps]


def test_skip_layer_normalization_with_bias_and_sum_output(tmp_path):
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y", "", "", "sum"],
                            domain="com.microsoft", epsilon=1e-5)
    feed = {"x": _random(B, S, HIDDEN), "skip": _random(B, S, HIDDEN, seed=1)}
    initializers = [_weights("gamma", _random(HIDDEN, seed=2)), _weights("beta", _random(HIDDEN, seed=3)),
                    _weights("bias", _random(HIDDEN, seed=4))]
    outputs = [_info("y", FLOAT, [B, S, HIDDEN]), _info("sum", FLOAT, [B, S, HIDDEN])]
    steps = _compare(tmp_path, _model([node], [_info(n, FLOAT, [B, S, HIDDEN]) for n in ("x", "skip")], outputs,
                                      initializers), feed)
    assert [s.kind for s in steps].count("layer_norm") == 1


@pytest.mark.parametrize("with_segments", [False, True], ids=["words_positions", "with_segments"])
def test_embed_layer_normalization_and_mask_index(tmp_path, with_segments):
    vocab = 50
    ids = np.random.default_rng(0).integers(0, vocab, (B, S)).astype(np.int32)
    feed = {"ids": ids, "mask": _padding("raw")}
    inputs = ["ids", "segments" if with_segments else "", "words", "positions", "segment_table" if with_segments
              else "", "gamma", "beta", "mask"]
    node = helper.make_node("EmbedLayerNormalization", inputs, ["y", "mask_index"], domain="com.microsoft",
                            epsilon=1e-12)
    feeds = [_info("ids", INT32, [B, S]), _info("mask", INT32, [B, S])]
    if with_segments:
        feed["segments"] = (np.arange(S)[None, :] >= 3).astype(np.int32).repeat(B, 0)
        feeds.append(_info("segments", INT32, [B, S]))
    initializers = [_weights("words", _random(vocab, HIDDEN)), _weights("positions", _random(16, HIDDEN, seed=1)),
                    _weights("segment_table", _random(2, HIDDEN, seed=2)), _weights("gamma", _random(HIDDEN, seed=3)),
                    _weights("beta", _random(HIDDEN, seed=4))]
    outputs = [_info("y", FLOAT, [B, S, HIDDEN]), _info("mask_index", INT32, [B])]
    _compare(tmp_path, _model([node], feeds, outputs, initializers[:2] + initializers[2 if with_segments else 3:]),
             feed)


@pytest.mark.parametrize("op_type, activation", [("BiasGelu", "gelu_erf"), ("FastGelu", "gelu_tanh"),
                                                 ("Gelu", "gelu_erf")])
def test_gelu_forms(tmp_path, op_type, activation):
    inputs = ["x"] if op_type == "Gelu" else ["x", "bias"]
    node = helper.make_node(op_type, inputs, ["y"], domain="com.microsoft")
    initializers = [] if op_type == "Gelu" else [_weights("bias", _random(HIDDEN, seed=1))]
    model = _model([node], [_info("x", FLOAT, [B, S, HIDDEN])], [_info("y", FLOAT, [B, S, HIDDEN])], initializers)
    (step,) = _compare(tmp_path, model, {"x": _random(B, S, HIDDEN, scale=3.0)})  # the bias add fused into it
    applied = step.op.type.value if step.kind == "activation" else " ".join(step.op.program)
    assert activation in applied


def test_attention_with_a_kv_cache_is_one_clear_error(tmp_path):
    node = helper.make_node("Attention", ["x", "w", "b", "", "past"], ["y", "present"], domain="com.microsoft",
                            num_heads=HEADS)
    feeds = [_info("x", FLOAT, [B, S, HIDDEN]), _info("past", FLOAT, [2, B, HEADS, 3, HIDDEN // HEADS])]
    initializers = [_weights("w", _random(HIDDEN, 3 * HIDDEN)), _weights("b", _random(3 * HIDDEN))]
    outputs = [_info("y", FLOAT, [B, S, HIDDEN]), _info("present", FLOAT, [2, B, HEADS, S + 3, HIDDEN // HEADS])]
    path = tmp_path / "cache.onnx"
    onnx.save(_model([node], feeds, outputs, initializers), str(path))
    with pytest.raises(ConversionError, match="KV cache"):
        parse_onnx(path)
