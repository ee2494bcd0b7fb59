"""Attention as exporters write it reaches the Triton flash-attention kernel on the GPU, in FP16 and BF16, not a
fallback: Hugging Face BERT (a padding mask, one row per sequence), GPT-2 (a causal mask combined with the padding
mask), a Llama-like decoder (grouped-query K/V heads read in place, no repeat) and torch's sdpa with is_causal (the
causal flag, no mask tensor). Outputs against onnxruntime in FP32. Skipped where no CUDA device is present
(tests/passes/test_attention_forms.py covers the recognition on the CPU)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.builder import BuilderConfig, Target
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.kernels.registry import candidates
from tensorkiln.passes.manager import DEFAULT_PIPELINE, PassManager
from tensorkiln.quant.precision import Precision

pytestmark = pytest.mark.gpu
transformers = pytest.importorskip("transformers", reason="needs transformers (pip install transformers)")

END_TO_END = {Precision.FP16: 5e-2, Precision.BF16: 2e-1}  # relative, against onnxruntime in FP32 (test_cuda_target)
SEQUENCE, LAYERS = 64, 2
_SMALL = dict(hidden_size=128, num_attention_heads=4, intermediate_size=256, num_hidden_layers=LAYERS,
              max_position_embeddings=128, vocab_size=1000, attn_implementation="sdpa")


def _model(name: str):
    if name == "bert":
        return transformers.BertModel(transformers.BertConfig(**_SMALL))
    if name == "gpt2":
        return transformers.GPT2Model(transformers.GPT2Config(n_layer=LAYERS, n_embd=128, n_head=4, vocab_size=1000,
                                                              n_positions=128, bos_token_id=0, eos_token_id=0,
                                                              attn_implementation="sdpa"))
    return transformers.LlamaModel(transformers.LlamaConfig(**_SMALL, num_key_value_heads=2))


class _Hidden(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        extra = {} if isinstance(self.model, transformers.BertModel) else {"use_cache": False}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state


class _Causal(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def _export(name: str, path) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    if name == "sdpa_causal":
        module, feed = _Causal(), {n: torch.randn(2, 4, SEQUENCE, 32) for n in "qkv"}
    else:
        module = _Hidden(_model(name).eval()).eval()
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.add_(0.02 * torch.randn_like(parameter))
        mask = torch.ones(2, SEQUENCE, dtype=torch.int64)
        mask[1, SEQUENCE - 20:] = 0
        feed = {"input_ids": torch.randint(0, 1000, (2, SEQUENCE)), "attention_mask": mask}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(feed.values()), str(path), dynamo=False, opset_version=17,
                          input_names=list(feed))
    return {key: value.numpy() for key, value in feed.items()}


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16], ids=lambda p: p.value)
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "sdpa_causal"])
def test_recognised_attention_runs_on_the_triton_flash_kernel(tmp_path, name, precision):
    import onnxruntime as ort

    path = tmp_path / f"{name}.onnx"
    feed = _export(name, path)
    # the flash kernel is a candidate for every recognised layer (which candidate wins is the timer's choice)
    network = parse_onnx(path).ir
    PassManager(DEFAULT_PIPELINE).run(network)
    layers = [layer for layer in network.layers if layer.kind == "attention"]
    for layer in layers:
        impls = [entry.impl for entry in candidates(layer.kind, "cuda", layer.op, layer.inputs)]
        assert any(impl.startswith("triton_flash") for impl in impls), (layer.name, impls)
    config = BuilderConfig(target=Target.CUDA, precision=precision, opt_level=2)
    engine = tk.Builder(config).build(parse_onnx(path))
    steps = [step for step in engine.plan.steps if step.kind == "attention"]
    assert len(steps) == len(layers) == (1 if name == "sdpa_causal" else LAYERS)
    print(name, precision.value, [step.tactic for step in steps])
    assert all(step.op.grouped_kv == (name == "llama") for step in steps)
    assert all(step.op.causal == (name == "sdpa_causal") for step in steps)
    (actual,) = engine.create_execution_context().execute(feed).values()
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    error = float(np.max(np.abs(actual.astype(np.float64) - expected)) / np.max(np.abs(expected)))
    assert error <= END_TO_END[precision], f"{name} {precision.value}: relative error {error:.2e}"
