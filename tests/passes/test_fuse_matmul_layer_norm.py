"""fuse_matmul_layer_norm: a fused GEMM (bias, residual) whose only reader is a LayerNorm over the last dim becomes one
fused_matmul_layer_norm layer. Checked on Hugging Face BERT and DistilBERT (small configurations exported in the
test) against onnxruntime, with the layer counts of each encoder layer, and on hand-built blocks against the engine
built without the pass, including the forms it must leave alone."""
from __future__ import annotations

import collections
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.passes.manager import DEFAULT_PIPELINE, pipeline_with
from tensorkiln.plan.in_place import residual_in_place_candidates
from tolerances import tolerance_for

transformers = pytest.importorskip("transformers", reason="needs transformers (pip install transformers)")

MAX_ABS_ERROR = 1e-4  # FP32 against onnxruntime, the bar of tests/models/test_hf_exports.py
SEQUENCE, LAYERS = 16, 2
TOL = tolerance_for("float32")
WIDTH = 24


class _LastHiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _hf_model(name: str):
    if name == "bert":
        return transformers.BertModel(transformers.BertConfig(
            num_hidden_layers=LAYERS, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=1000,
            max_position_embeddings=64, attn_implementation="sdpa"))
    return transformers.DistilBertModel(transformers.DistilBertConfig(
        n_layers=LAYERS, dim=64, n_heads=4, hidden_dim=128, vocab_size=1000, max_position_embeddings=64,
        attn_implementation="sdpa"))


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def hf_export(request, tmp_path_factory):
    """(name, ONNX bytes, feed): two sentences, the second padded by a quarter."""
    torch.manual_seed(0)
    model = _LastHiddenState(_hf_model(request.param).eval())
    with torch.no_grad():  # transformers sets biases to 0 and norms to 1: make every fused operand matter
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ids = torch.randint(0, 1000, (2, SEQUENCE))
    mask = torch.ones(2, SEQUENCE, dtype=torch.int64)
    mask[1, SEQUENCE - SEQUENCE // 4:] = 0
    path = tmp_path_factory.mktemp("hf") / f"{request.param}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, mask), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["output"])
    return request.param, path.read_bytes(), {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def test_hf_encoders_fuse_every_residual_norm_and_match_onnxruntime(hf_export):
    name, model, feed = hf_export
    engine = tk.Builder(tk.BuilderConfig()).build(parse_onnx(model))
    kinds = collections.Counter(step.kind for step in engine.plan.steps)
    # per encoder layer: the attention output and the FFN down-projection, each with its residual and LayerNorm
    assert engine.plan.build_info["pass_counts"]["fuse_matmul_layer_norm.fused"] == 2 * LAYERS
    assert kinds["fused_matmul_layer_norm"] == 2 * LAYERS
    assert kinds["layer_norm"] == 0  # the embeddings' norm reads an add, not a GEMM: fuse_add_layer_norm takes it
    assert kinds["fused_add_layer_norm"] == 1 and "elementwise" not in kinds and "fused_pointwise" not in kinds
    assert kinds["gather"] == 1 and kinds["cast"] == 1  # the word embeddings; the mask chain's gather is a view
    # the second encoder layer (the first also computes the shared padding mask): its GEMMs and attention, and the
    # views that split and merge the heads (no kernels: the attention kernel reads them in place)
    second = collections.Counter(s.kind for s in engine.plan.steps if "layer.1/" in s.name)
    assert second == {"fused_matmul": 2, "fused_matmul_layer_norm": 2, "attention": 1, "split": 1, "shuffle": 4}
    fused = [s for s in engine.plan.steps if s.kind == "fused_matmul_layer_norm"]
    assert all(s.op.residual and s.inputs[3] is not None and s.inputs[4] is not None for s in fused)
    # on a GPU each may store over its residual (the embeddings' fused norm and these give fresh tensors), as the
    # LayerNorms before the fusion let the residual GEMMs do (cuBLAS accumulates into it); not the last, whose output
    # is the network's (network outputs live outside the arena)
    outside = {t.name for t in engine.plan.outputs}
    inner = {s.name for s in fused if s.outputs[0] not in outside}
    assert len(inner) == 2 * LAYERS - 1
    assert inner <= residual_in_place_candidates(engine.plan.steps, engine.plan.tensors, outside)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = engine.create_execution_context().execute(feed)["output"]
    assert np.abs(np.asarray(got) - want).max() <= MAX_ABS_ERROR


def _block(norm_axes: int = 1, relu: bool = False, extra_reader: bool = False, residual: bool = True,
           bias: bool = True):
    """y = LN(x W + b [+ x]) over the last `norm_axes` dims; variants the pass must leave alone."""
    def make():
        rng = np.random.default_rng(5)
        net = tk.NetworkDefinition()
        x = net.add_input("x", tk.DataType.FLOAT, (2, 7, WIDTH))
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        b = rng.standard_normal(WIDTH).astype(np.float32) if bias else None
        h = net.add_fully_connected(x, WIDTH, w, b, axis=2, name="proj").get_output(0)
        if relu:
            h = net.add_activation(h, tk.ActivationType.RELU).get_output(0)
        if residual:
            h = net.add_elementwise(h, x, tk.ElementWiseOperation.SUM).get_output(0)
        shape = (7, WIDTH)[-norm_axes:]
        scale = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        y = net.add_layer_norm(h, scale, rng.standard_normal(shape).astype(np.float32), axis=-norm_axes,
                               name="norm").get_output(0)
        net.mark_output(y)
        if extra_reader:
            net.mark_output(net.add_activation(h, tk.ActivationType.SIGMOID).get_output(0))
        return net
    return make


def _fused_count(make) -> int:
    feed = {"x": np.random.default_rng(0).standard_normal((2, 7, WIDTH)).astype(np.float32)}
    engine = tk.Builder(tk.BuilderConfig(passes=DEFAULT_PIPELINE)).build(make())
    reference = tk.Builder(tk.BuilderConfig(passes=pipeline_with("-fuse_matmul_layer_norm"))).build(make())
    got, want = engine.create_execution_context().execute(feed), reference.create_execution_context().execute(feed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=TOL.rtol, atol=TOL.atol, err_msg=name)
    return sum(step.kind == "fused_matmul_layer_norm" for step in engine.plan.steps)


@pytest.mark.parametrize("residual, bias", [(True, True), (True, False), (False, True)])
def test_gemm_and_its_norm_become_one_layer(residual, bias):
    assert _fused_count(_block(residual=residual, bias=bias)) == 1


@pytest.mark.parametrize("case, make", [
    ("norm over two dims", _block(norm_axes=2)),
    ("activation between", _block(relu=True)),
    ("pre-norm sum read elsewhere", _block(extra_reader=True)),
])
def test_forms_left_alone(case, make):
    assert _fused_count(make) == 0, case


def test_engine_with_fused_norm_saves_and_loads(tmp_path):
    engine = tk.Builder(tk.BuilderConfig()).build(_block()())
    path = tmp_path / "block.engine"
    engine.save(path)
    loaded = tk.Runtime().load(path)
    feed = {"x": np.random.default_rng(1).standard_normal((2, 7, WIDTH)).astype(np.float32)}
    got = loaded.create_execution_context().execute(feed)
    want = engine.create_execution_context().execute(feed)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert any(step.kind == "fused_matmul_layer_norm" for step in loaded.plan.steps)


def test_cpu_binder_computes_what_the_kernel_computes():
    from tensorkiln.ir import ops
    from tensorkiln.kernels.cpu.bound import BoundInput, bind_kernel
    from tensorkiln.kernels.cpu.matmul_layer_norm import fused_matmul_layer_norm

    op = ops.FusedMatMulLayerNorm(transpose_b=True, residual=True, epsilon=1e-6)
    generator = torch.Generator().manual_seed(2)
    a, w, bias, residual, scale, shift = (torch.randn(*shape, generator=generator)
                                          for shape in ((2, 3, 8), (6, 8), (6,), (2, 3, 6), (6,), (6,)))
    spec = lambda t, weight=False: BoundInput(tuple(t.shape), t.dtype, t if weight else None,  # noqa: E731
                                              torch.contiguous_format)
    call = bind_kernel(op.KIND, "torch", op, [spec(a), spec(w, True), spec(bias, True), spec(residual),
                                              spec(scale, True), spec(shift, True)], [spec(residual)])
    assert call is not None
    want = fused_matmul_layer_norm(op, [a, w, bias, residual, scale, shift])[0]
    got = call([a, w, bias, residual.clone(), scale, shift])[0]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
