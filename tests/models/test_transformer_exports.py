"""Whole exported models through the graph optimizer: a BERT-base-style encoder and an Inception block, written in
plain torch.nn, exported with the TorchScript exporter (opset 17), built, and compared with onnxruntime; the
recognition and fusion passes must turn every attention block, layer norm and GELU into one layer each, and merge
the sibling projections and 1x1 convolutions."""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.passes.manager import DEFAULT_PIPELINE

RTOL = 1e-5  # FP32: max |ours - onnxruntime| over max |onnxruntime|

# (layers, sequence length): two BERT-base layers (every layer has the same architecture) keep CI fast; the full
# 12-layer BERT-base at sequence 128 runs with TENSORKILN_FULL_MODELS=1
BERT_SIZES = [(2, 16)] + ([(12, 128)] if os.environ.get("TENSORKILN_FULL_MODELS") == "1" else [])
HIDDEN, HEADS, INTERMEDIATE = 768, 12, 3072
VOCAB = 1000  # BERT-base has 30522 word pieces; the table size changes only the weight of one Gather


class BertLayerNorm(nn.Module):
    """As in Google's BERT ports (pytorch-pretrained-bert): written out, so exporters emit the primitive ops."""

    def __init__(self, hidden: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(hidden))
        self.bias = nn.Parameter(0.1 * torch.randn(hidden))
        self.eps = eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.eps)) + self.bias


class BertLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
        self.attention_output, self.attention_norm = nn.Linear(HIDDEN, HIDDEN), BertLayerNorm(HIDDEN)
        self.intermediate, self.output = nn.Linear(HIDDEN, INTERMEDIATE), nn.Linear(INTERMEDIATE, HIDDEN)
        self.output_norm = BertLayerNorm(HIDDEN)

    def _heads(self, x):
        return x.view(x.shape[0], x.shape[1], HEADS, HIDDEN // HEADS).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HIDDEN // HEADS) + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(x.shape)
        x = self.attention_norm(x + self.attention_output(context))
        return self.output_norm(x + self.output(nn.functional.gelu(self.intermediate(x))))


class BertEncoder(nn.Module):
    def __init__(self, layers: int, max_positions: int = 512):
        super().__init__()
        self.words, self.positions = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(max_positions, HIDDEN)
        self.norm = BertLayerNorm(HIDDEN)
        self.layers = nn.ModuleList(BertLayer() for _ in range(layers))

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.norm(self.words(input_ids) + self.positions(positions))
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return x


def _export(module, inputs, path, names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=False, opset_version=17, input_names=names)
    return str(path)


def _compare_with_onnxruntime(path, engine, feeds):
    import onnxruntime as ort

    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    outputs = engine.create_execution_context().execute(feeds)
    for actual, reference in zip(outputs.values(), expected):
        error = np.max(np.abs(actual.astype(np.float64) - reference)) / np.max(np.abs(reference))
        assert error <= RTOL, f"relative error {error:.2e}"


@pytest.mark.parametrize("layers, sequence", BERT_SIZES, ids=[f"{n}_layers_seq{s}" for n, s in BERT_SIZES])
def test_bert_encoder_attention_layer_norm_and_gelu_become_single_layers(tmp_path, layers, sequence):
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, sequence))
    mask = torch.ones(2, sequence, dtype=torch.int64)
    mask[1, sequence // 2:] = 0  # the second sentence is padded
    path = _export(BertEncoder(layers), (ids, mask), tmp_path / "bert.onnx", ["input_ids", "attention_mask"])
    engine = tk.Builder().build(parse_onnx(path))
    counts = engine.plan.build_info["pass_counts"]
    assert counts["recognize_attention.attention"] == layers
    assert counts["recognize_layer_norm.layer_norm"] == 2 * layers + 1  # embeddings, and two per layer
    assert counts["recognize_gelu.gelu_erf"] == layers
    assert counts["fuse_horizontal.matrix_multiply_groups"] == layers  # Q, K, V: one matrix multiply per layer
    assert counts["hoist_residual_bias.hoisted"] == 2 * layers  # each residual GEMM leaves its bias to a LayerNorm
    steps = engine.plan.steps
    kinds = [s.kind for s in steps]
    assert kinds.count("attention") == layers and "softmax" not in kinds
    assert "layer_norm" not in kinds and "reduce" not in kinds and "unary" not in kinds
    # the norms go into what produced their input: the residual GEMMs' (fuse_matmul_layer_norm), the embeddings' add
    # (fuse_add_layer_norm)
    assert kinds.count("fused_matmul_layer_norm") == 2 * layers and kinds.count("fused_add_layer_norm") == 1
    # fuse_vertical puts each GELU into its matrix multiply: fused_matmul(activation=GELU_ERF)
    assert "activation" not in kinds
    assert [s.op.activation for s in steps if s.kind == "fused_matmul" and s.op.activation] == [A.GELU_ERF] * layers
    assert all(s.op.has_mask and s.op.scale == pytest.approx(1 / 8) for s in steps if s.kind == "attention")
    # QKV and intermediate: each with its bias (and GELU) fused; attention output and output: with their norms
    assert kinds.count("fused_matmul") == 2 * layers and "matrix_multiply" not in kinds
    _compare_with_onnxruntime(path, engine, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})


class _ConvReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.ReLU())


class InceptionBlock(nn.Module):
    """GoogLeNet's inception (3a): 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1; concatenated, then pooled."""

    def __init__(self, cin: int = 192):
        super().__init__()
        self.branch1 = _ConvReLU(cin, 64, 1)
        self.branch3 = nn.Sequential(_ConvReLU(cin, 96, 1), _ConvReLU(96, 128, 3))
        self.branch5 = nn.Sequential(_ConvReLU(cin, 16, 1), _ConvReLU(16, 32, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), _ConvReLU(cin, 32, 1))

    def forward(self, x):
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        return nn.functional.max_pool2d(torch.cat(branches, 1), 3, 2, 1)


def test_inception_block_merges_its_1x1_convolutions(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(1, 192, 14, 14)  # 28x28 in GoogLeNet; the size changes nothing in the graph
    path = _export(InceptionBlock(), (x,), tmp_path / "inception.onnx", ["x"])
    engine = tk.Builder().build(parse_onnx(path))
    counts = engine.plan.build_info["pass_counts"]
    assert counts["fuse_horizontal.convolution_groups"] == 1
    assert counts["fuse_horizontal.convolution_layers"] == 3  # the pool branch's 1x1 reads another tensor
    kinds = [s.kind for s in engine.plan.steps]
    assert kinds.count("fused_convolution") == 4 and kinds.count("split") == 1  # with bias and ReLU each
    (split,) = [s for s in engine.plan.steps if s.kind == "split"]
    assert split.op.sizes == (64, 96, 16)
    # branch 1 is now a view of the merged convolution's result, so its producer cannot write into the
    # concatenation: the concatenation copies; without the horizontal merge it would be eligible
    assert "eliminate_concat.in_place_eligible" not in counts
    _compare_with_onnxruntime(path, engine, {"x": x.numpy()})
    unmerged = tuple(p for p in DEFAULT_PIPELINE if p != "fuse_horizontal")
    engine = tk.Builder(tk.BuilderConfig(passes=unmerged)).build(parse_onnx(path))
    assert engine.plan.build_info["pass_counts"]["eliminate_concat.in_place_eligible"] == 1
    _compare_with_onnxruntime(path, engine, {"x": x.numpy()})
