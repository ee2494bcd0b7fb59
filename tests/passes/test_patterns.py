"""Pattern recognition passes (GELU, LayerNorm, RMSNorm, attention): each rewrite fires with the expected counts
on the graphs exporters write, does not fire where it must not, and leaves the outputs unchanged."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.ir.ops import ElementWiseOperation as E
from tensorkiln.ir.ops import ReduceOperation as R
from tensorkiln.ir.ops import UnaryOperation as U

RECOGNIZE = ("fold_constants", "recognize_layer_norm", "recognize_rms_norm", "recognize_gelu",
             "recognize_attention", "remove_dead_layers")
RTOL = 1e-5  # FP32: max |a - b| over max |b|


# ---- helpers ----------------------------------------------------------------------------------------------
def _export(module: nn.Module, inputs: tuple, path, opset: int = 17) -> str:
    names = [f"in{i}" for i in range(len(inputs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=False, opset_version=opset, input_names=names)
    return str(path)


def _feeds(inputs: tuple) -> dict[str, np.ndarray]:
    return {f"in{i}": t.numpy() for i, t in enumerate(inputs)}


def _build(network, passes):
    engine = tk.Builder(tk.BuilderConfig(passes=passes, debug=True)).build(network)
    return engine, engine.plan.build_info["pass_counts"], [s.kind for s in engine.plan.steps]


def _assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    error = np.max(np.abs(actual.astype(np.float64) - expected)) / max(np.max(np.abs(expected)), 1e-12)
    assert error <= RTOL, f"relative error {error:.2e}"


def _check_export(tmp_path, module, inputs, opset=17):
    """Export, build with the recognition passes, compare with onnxruntime; return (counts, step kinds, steps)."""
    import onnxruntime as ort

    path = _export(module, inputs, tmp_path / "model.onnx", opset)
    engine, counts, kinds = _build(parse_onnx(path), RECOGNIZE)
    outputs = engine.create_execution_context().execute(_feeds(inputs))
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, _feeds(inputs))
    for actual, reference in zip(outputs.values(), expected):
        _assert_close(actual, reference)
    return {k: v for k, v in counts.items() if not k.startswith(("fold_constants", "remove_dead"))}, kinds, \
        engine.plan.steps


def _with_and_without(make, feeds, passes=RECOGNIZE):
    """Counts and step kinds with `passes`; outputs agree with the network built without them."""
    engine, counts, kinds = _build(make(), passes)
    reference, _, _ = _build(make(), ("fold_constants",))
    got = engine.create_execution_context().execute(feeds)
    want = reference.create_execution_context().execute(feeds)
    for name in want:
        _assert_close(got[name], want[name])
    return {k: v for k, v in counts.items() if not k.startswith(("fold_constants", "remove_dead"))}, kinds


def _scalar(net, value):
    return net.add_constant((), np.array(value, np.float32)).get_output(0)


# ---- GELU -------------------------------------------------------------------------------------------------
class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


GELU_FORMS = {
    "torch_erf": (lambda x: F.gelu(x), "gelu_erf"),
    "bert_erf": (lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))), "gelu_erf"),
    "mul_0.7071": (lambda x: 0.5 * (x * (1.0 + torch.erf(x * 0.7071067811865476))), "gelu_erf"),
    "erf_first": (lambda x: ((torch.erf(x / 1.4142135623730951) + 1.0) * x) * 0.5, "gelu_erf"),
    "torch_tanh": (lambda x: F.gelu(x, approximate="tanh"), "gelu_tanh"),
    "gpt2_pow": (lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
                 "gelu_tanh"),
}


@pytest.mark.parametrize("form", sorted(GELU_FORMS))
def test_gelu_forms_become_one_activation(tmp_path, form):
    fn, rewrite = GELU_FORMS[form]
    counts, kinds, steps = _check_export(tmp_path, _Lambda(fn), (torch.randn(2, 7, 33) * 3,))
    assert counts == {f"recognize_gelu.{rewrite}": 1}
    assert kinds == ["activation"]
    assert steps[0].op.type is (A.GELU_ERF if rewrite == "gelu_erf" else A.GELU_TANH)


def _erf_gelu_network(half=0.5, expose_erf=False):
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (3, 17))
    scaled = net.add_elementwise(x, _scalar(net, math.sqrt(2.0)), E.DIV).get_output(0)
    erf = net.add_unary(scaled, U.ERF, name="erf").get_output(0)
    one_plus = net.add_elementwise(erf, _scalar(net, 1.0), E.SUM).get_output(0)
    product = net.add_elementwise(x, one_plus, E.PROD).get_output(0)
    net.mark_output(net.add_elementwise(product, _scalar(net, half), E.PROD, name="y").get_output(0))
    if expose_erf:
        net.mark_output(erf)
    return net


def test_gelu_is_not_recognized_where_an_inner_value_is_used_elsewhere_or_a_constant_differs():
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 17)).astype(np.float32)}
    counts, kinds = _with_and_without(lambda: _erf_gelu_network(expose_erf=True), feeds)
    assert counts == {} and "unary" in kinds
    counts, kinds = _with_and_without(lambda: _erf_gelu_network(half=0.6), feeds)
    assert counts == {} and "activation" not in kinds
    counts, kinds = _with_and_without(_erf_gelu_network, feeds)
    assert counts == {"recognize_gelu.gelu_erf": 1} and kinds == ["activation"]


# ---- LayerNorm --------------------------------------------------------------------------------------------
class _BertLayerNorm(nn.Module):
    """The layer norm of Google's BERT ports (pytorch-pretrained-bert), written out: exported as primitive ops."""

    def __init__(self, hidden, eps=1e-12, square_by_mul=False):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(hidden) + 0.5)
        self.bias = nn.Parameter(torch.randn(hidden) * 0.1)
        self.eps, self.square_by_mul = eps, square_by_mul

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        d = x - u
        s = (d * d if self.square_by_mul else d.pow(2)).mean(-1, keepdim=True)
        return self.weight * (d / torch.sqrt(s + self.eps)) + self.bias


def _torch_layer_norm(shape, affine=True):
    norm = nn.LayerNorm(shape, eps=1e-5, elementwise_affine=affine)
    if affine:
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.1, 0.1)
    return norm


@pytest.mark.parametrize("module, axis", [
    (_BertLayerNorm(48), -1),
    (_BertLayerNorm(48, square_by_mul=True), -1),
    (_torch_layer_norm(48), -1),  # opset 14 has no LayerNormalization: the exporter spells it out
    (_torch_layer_norm(48, affine=False), -1),
    (_torch_layer_norm((5, 48)), -2),
], ids=["bert", "bert_mul_self", "torch_opset14", "torch_no_affine", "two_dims"])
def test_layer_norm_chains_become_one_layer(tmp_path, module, axis):
    counts, kinds, steps = _check_export(tmp_path, module, (torch.randn(2, 5, 48) * 2 + 1,), opset=14)
    assert counts == {"recognize_layer_norm.layer_norm": 1}
    assert kinds == ["layer_norm"] and steps[0].op.axis == axis


def _layer_norm_network(gamma_shape=(8,), expose_mean=False):
    rng = np.random.default_rng(1)
    net = tk.NetworkDefinition()
    x = net.add_input("x", tk.DataType.FLOAT, (2, 3, 8))
    mean = net.add_reduce(x, R.MEAN, (-1,), name="mean").get_output(0)
    centered = net.add_elementwise(x, mean, E.SUB).get_output(0)
    square = net.add_elementwise(centered, _scalar(net, 2.0), E.POW).get_output(0)
    variance = net.add_reduce(square, R.MEAN, (2,)).get_output(0)
    std = net.add_unary(net.add_elementwise(variance, _scalar(net, 1e-5), E.SUM).get_output(0), U.SQRT).get_output(0)
    normalized = net.add_elementwise(centered, std, E.DIV).get_output(0)
    gamma = net.add_constant(gamma_shape, rng.uniform(0.5, 1.5, gamma_shape).astype(np.float32)).get_output(0)
    net.mark_output(net.add_elementwise(gamma, normalized, E.PROD, name="y").get_output(0))
    if expose_mean:
        net.mark_output(mean)
    return net


def test_layer_norm_is_not_recognized_where_it_must_not_be():
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)}
    counts, kinds = _with_and_without(_layer_norm_network, feeds)
    assert counts == {"recognize_layer_norm.layer_norm": 1} and kinds == ["layer_norm"]
    # the mean is also a network output: the chain stays (its RMS-norm-shaped tail is recognized instead)
    counts, kinds = _with_and_without(lambda: _layer_norm_network(expose_mean=True), feeds)
    assert "layer_norm" not in kinds and "recognize_layer_norm.layer_norm" not in counts
    # gamma varies along the batch dim, which layer_norm cannot express: no rewrite at the Mul
    counts, kinds = _with_and_without(lambda: _layer_norm_network(gamma_shape=(2, 1, 8)), feeds)
    assert kinds[-1] == "elementwise" and kinds.count("layer_norm") == 1  # the scale-free chain below it only


# ---- RMSNorm ----------------------------------------------------------------------------------------------
class _LlamaRMSNorm(nn.Module):
    def __init__(self, hidden, eps=1e-6, weight=True, rsqrt=True):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(hidden) + 0.5) if weight else None
        self.eps, self.rsqrt = eps, rsqrt

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps) if self.rsqrt else x / torch.sqrt(variance + self.eps)
        return x if self.weight is None else self.weight * x


@pytest.mark.parametrize("module", [_LlamaRMSNorm(64), _LlamaRMSNorm(64, weight=False, rsqrt=False)],
                         ids=["llama_rsqrt", "div_sqrt_no_weight"])
def test_rms_norm_becomes_one_layer(tmp_path, module):
    counts, kinds, steps = _check_export(tmp_path, module, (torch.randn(2, 9, 64),))
    assert counts == {"recognize_rms_norm.rms_norm": 1}
    assert kinds == ["rms_norm"] and steps[0].op.epsilon == pytest.approx(1e-6)


def test_rms_norm_with_eps_outside_the_root_is_left_alone(tmp_path):
    module = _Lambda(lambda x: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + 1e-6))
    counts, kinds, _ = _check_export(tmp_path, module, (torch.randn(2, 9, 64),))
    assert counts == {} and "rms_norm" not in kinds


# ---- attention --------------------------------------------------------------------------------------------
class _SelfAttention(nn.Module):
    """BERT's self-attention: head split by view + permute, K^T by transpose, scale by Div, additive mask."""

    def __init__(self, hidden=64, heads=4, scale_by_mul=False):
        super().__init__()
        self.heads, self.depth, self.scale_by_mul = heads, hidden // heads, scale_by_mul
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def _split(self, x):
        return x.view(x.shape[0], x.shape[1], self.heads, self.depth).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores * (1 / math.sqrt(self.depth)) if self.scale_by_mul else scores / math.sqrt(self.depth)
        probs = torch.softmax(scores + (1.0 - mask[:, None, None, :]) * -10000.0, dim=-1)
        return torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(x.shape)


@pytest.mark.parametrize("scale_by_mul", [False, True], ids=["div", "mul"])
def test_bert_self_attention_becomes_one_layer(tmp_path, scale_by_mul):
    mask = torch.ones(2, 11)
    mask[1, 7:] = 0
    counts, kinds, steps = _check_export(tmp_path, _SelfAttention(scale_by_mul=scale_by_mul),
                                         (torch.randn(2, 11, 64), mask))
    assert counts == {"recognize_attention.attention": 1}
    assert "softmax" not in kinds and kinds.count("matrix_multiply") == 3  # the projections
    (attention,) = [s for s in steps if s.kind == "attention"]
    assert attention.op.has_mask and attention.op.scale == pytest.approx(0.25)


def test_sdpa_export_scaling_q_and_k_separately_becomes_one_layer(tmp_path):
    module = _Lambda(lambda q: F.scaled_dot_product_attention(q, q * 0.5 + 1, q.flip(-2)))
    counts, kinds, steps = _check_export(tmp_path, module, (torch.randn(1, 3, 10, 8),))
    assert counts == {"recognize_attention.attention": 1}
    assert "shuffle" not in kinds  # the K transpose became the identity and disappeared
    (attention,) = [s for s in steps if s.kind == "attention"]
    assert attention.op.scale == pytest.approx(1 / math.sqrt(8), rel=1e-6) and not attention.op.has_mask


def _attention_network(transpose_b=False, softmax_axis=-1, expose_scores=False):
    net = tk.NetworkDefinition()
    q = net.add_input("q", tk.DataType.FLOAT, (2, 5, 7, 16))
    k = net.add_input("k", tk.DataType.FLOAT, (2, 5, 16, 7) if not transpose_b else (2, 5, 7, 16))
    v = net.add_input("v", tk.DataType.FLOAT, (2, 5, 7, 3))
    scores = net.add_matrix_multiply(q, k, transpose1=transpose_b).get_output(0)
    scaled = net.add_elementwise(scores, _scalar(net, 0.2), E.PROD).get_output(0)
    probs = net.add_softmax(scaled, softmax_axis).get_output(0)
    net.mark_output(net.add_matrix_multiply(probs, v, name="out").get_output(0))
    if expose_scores:
        net.mark_output(scaled)
    return net


def test_attention_key_layouts_and_where_it_must_not_fire():
    rng = np.random.default_rng(0)
    feeds = {"q": rng.standard_normal((2, 5, 7, 16), dtype=np.float32),
             "k": rng.standard_normal((2, 5, 16, 7), dtype=np.float32),
             "v": rng.standard_normal((2, 5, 7, 3), dtype=np.float32)}
    # K^T is a network input: a transposing shuffle (a view) gives K
    counts, kinds = _with_and_without(_attention_network, feeds)
    assert counts == {"recognize_attention.attention": 1} and kinds == ["shuffle", "attention"]
    # transpose_b: the operand is K itself
    feeds_b = {**feeds, "k": np.ascontiguousarray(feeds["k"].swapaxes(-1, -2))}
    counts, kinds = _with_and_without(lambda: _attention_network(transpose_b=True), feeds_b)
    assert counts == {"recognize_attention.attention": 1} and kinds == ["attention"]
    # softmax over another axis, or scores that are also an output: not attention
    for make in (lambda: _attention_network(softmax_axis=-2), lambda: _attention_network(expose_scores=True)):
        counts, kinds = _with_and_without(make, feeds)
        assert counts == {} and "attention" not in kinds
