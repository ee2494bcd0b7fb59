"""NaN and Inf propagate through every fused kernel as through the unfused ONNX graph in onnxruntime (issue 18).

Each case is a small ONNX model whose optimized engine holds the fused layer named in the case (asserted, so that a
case cannot pass by not fusing), run on inputs holding NaN, +Inf and -Inf at a few positions and compared with
onnxruntime: NaN, +Inf and -Inf at exactly the same positions, the finite values within the float32 tolerance.

Max pooling is the exception to "as onnxruntime": its MaxPool and GlobalMaxPool keep a NaN only when it is the last
element of the window (they are order-dependent, see test_onnxruntime_max_pool_nan_depends_on_the_position), so no
engine could match them. There the reference is the definition (ONNX's max of the window, numpy's np.max): NaN
wherever the window holds a NaN, as tensorkiln's pooling kernels (and PyTorch's) compute it.

The CPU cases run here; the `gpu` versions build CUDA engines (every tactic source, and Triton or cuDNN/cuBLAS
alone) and run where a GPU is. The Triton kernels on their own, in the interpreter: tests/gpu/test_triton_nan_inf.py.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tolerances import tolerance_for

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

RNG = np.random.default_rng(18)


# ---- models -----------------------------------------------------------------------------------------------------
def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _weight(name: str, *shape) -> onnx.TensorProto:
    return _const(name, RNG.standard_normal(shape).astype(np.float32) * 0.3)


def _model(nodes, inputs: dict[str, tuple[int, ...]], initializers=(), opset: int = 17) -> bytes:
    graph = helper.make_graph(
        nodes, "nan_inf", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # onnxruntime reads IR versions up to 10 (the device's: up to 13)
    return model.SerializeToString()


def _node(op: str, inputs: list[str], output: str, **attributes) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attributes)


IMAGE = {"x": (1, 3, 9, 9)}
CONV = [_weight("w", 4, 3, 3, 3), _weight("b", 4)]
CLIP_BOUNDS = [_const("lo", 0.0), _const("hi", 6.0)]
TOKENS = {"a": (2, 5, 7)}


def _conv_then(*nodes, pads=(1, 1, 1, 1), extra=()):
    return _model([_node("Conv", ["x", "w", "b"], "c", pads=list(pads)), *nodes], IMAGE, CONV + list(extra))


def _attention(mask: bool):
    names = ["q", "k", "v"] + (["mask"] if mask else [])
    shapes = {n: (1, 2, 5, 8) for n in ("q", "k", "v")} | ({"mask": (1, 1, 5, 5)} if mask else {})
    scores = [_node("Transpose", ["k"], "kt", perm=[0, 1, 3, 2]), _node("MatMul", ["q", "kt"], "s"),
              _node("Mul", ["s", "scale"], "ss")]
    scores += [_node("Add", ["ss", "mask"], "sm")] if mask else [_node("Identity", ["ss"], "sm")]
    nodes = scores + [_node("Softmax", ["sm"], "p", axis=-1), _node("MatMul", ["p", "v"], "y")]
    assert list(shapes) == names
    return _model(nodes, shapes, [_const("scale", 0.35)])


def _gelu_after_matmul():
    nodes = [_node("MatMul", ["a", "wm"], "mm"), _node("Div", ["mm", "root2"], "d"), _node("Erf", ["d"], "e"),
             _node("Add", ["e", "one"], "e1"), _node("Mul", ["mm", "e1"], "m1"), _node("Mul", ["m1", "half"], "y")]
    return _model(nodes, TOKENS, [_weight("wm", 7, 6), _const("root2", math.sqrt(2)), _const("one", 1.0),
                                  _const("half", 0.5)])


def _rms_norm():
    nodes = [_node("Mul", ["a", "a"], "sq"), _node("ReduceMean", ["sq"], "ms", axes=[-1]),
             _node("Add", ["ms", "eps"], "me"), _node("Sqrt", ["me"], "rt"), _node("Div", ["a", "rt"], "y")]
    return _model(nodes, TOKENS, [_const("eps", 1e-6)])


TWO_IMAGES = {"x": (1, 3, 9, 9), "x2": (1, 3, 9, 9)}
# (id, model bytes, the fused layer kind the engine must hold)
CASES = [
    ("conv_relu", _conv_then(_node("Relu", ["c"], "y")), "fused_convolution"),  # oneDNN, NHWC
    ("conv_relu_asymmetric_pads", _conv_then(_node("Relu", ["c"], "y"), pads=(0, 0, 1, 1)), "fused_convolution"),
    ("conv1d_relu", _model([_node("Conv", ["x", "w1"], "c"), _node("Relu", ["c"], "y")], {"x": (1, 3, 11)},
                           [_weight("w1", 4, 3, 3)]), "fused_convolution"),  # the plain torch path
    ("conv_clip", _conv_then(_node("Clip", ["c", "lo", "hi"], "y"), extra=CLIP_BOUNDS), "fused_convolution"),
    ("conv_leaky_relu", _conv_then(_node("LeakyRelu", ["c"], "y", alpha=0.1)), "fused_convolution"),
    ("conv_hard_swish", _conv_then(_node("HardSwish", ["c"], "y")), "fused_convolution"),
    ("conv_prelu", _conv_then(_node("PRelu", ["c", "slope"], "y"), extra=[_const("slope", np.full((4, 1, 1), 0.2))]),
     "fused_convolution"),
    ("conv_relu_residual_relu", _model([
        _node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]), _node("Relu", ["c"], "r"),
        _node("Conv", ["r", "w2"], "c2", pads=[1, 1, 1, 1]), _node("Add", ["c2", "r"], "s"), _node("Relu", ["s"], "y")],
        IMAGE, CONV + [_weight("w2", 4, 4, 3, 3)]), "fused_convolution"),
    ("deconv_relu", _model([_node("ConvTranspose", ["x", "wd"], "c", strides=[2, 2]), _node("Relu", ["c"], "y")],
                           IMAGE, [_weight("wd", 3, 4, 3, 3)]), "fused_deconvolution"),
    ("matmul_bias_relu", _model([_node("MatMul", ["a", "wm"], "mm"), _node("Add", ["mm", "bm"], "s"),
                                 _node("Relu", ["s"], "y")], TOKENS, [_weight("wm", 7, 6), _weight("bm", 6)]),
     "fused_matmul"),
    ("matmul_clip", _model([_node("MatMul", ["a", "wm"], "mm"), _node("Clip", ["mm", "lo", "hi"], "y")], TOKENS,
                           [_weight("wm", 7, 6)] + CLIP_BOUNDS), "fused_matmul"),
    ("matmul_gelu", _gelu_after_matmul(), "fused_matmul"),
    ("pointwise_max_min", _model([_node("Mul", ["x", "x2"], "m"), _node("Max", ["m", "x"], "a"),
                                  _node("Min", ["a", "x2"], "y")], TWO_IMAGES), "fused_pointwise"),
    ("pointwise_relu", _model([_node("Add", ["x", "x2"], "s"), _node("Relu", ["s"], "y")], TWO_IMAGES),
     "fused_pointwise"),
    ("pointwise_clip", _model([_node("Add", ["x", "x2"], "s"), _node("Clip", ["s", "lo", "hi"], "y")], TWO_IMAGES,
                              CLIP_BOUNDS), "fused_pointwise"),
    ("pointwise_hard_sigmoid_celu", _model([_node("Sub", ["x", "x2"], "s"), _node("HardSigmoid", ["s"], "h"),
                                            _node("Celu", ["s"], "c"), _node("Add", ["h", "c"], "y")], TWO_IMAGES),
     "fused_pointwise"),
    ("layer_norm", _model([_node("LayerNormalization", ["a", "gamma", "beta"], "y", axis=-1)], TOKENS,
                          [_weight("gamma", 7), _weight("beta", 7)]), "layer_norm"),
    ("rms_norm", _rms_norm(), "rms_norm"),
    ("attention", _attention(mask=False), "attention"),
    ("attention_with_mask", _attention(mask=True), "attention"),
    ("softmax", _model([_node("Softmax", ["a"], "y", axis=-1)], TOKENS), "softmax"),
    ("average_pool", _model([_node("AveragePool", ["x"], "y", kernel_shape=[3, 3], pads=[1, 1, 1, 1])], IMAGE),
     "pooling"),
]


# ---- feeds and comparisons ----------------------------------------------------------------------------------------
def _poisoned(shape, rng) -> np.ndarray:
    """Standard normal values with NaN, +Inf and -Inf at a few spread positions (never all in one window)."""
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    n = flat.size
    flat[0], flat[n // 3], flat[n // 2], flat[(3 * n) // 4] = np.nan, np.inf, -np.inf, np.nan
    return x


def _feeds(model: bytes, fill=None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    graph = onnx.load_from_string(model).graph
    initializers = {t.name for t in graph.initializer}
    feeds = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        feeds[value.name] = np.full(shape, fill, np.float32) if fill is not None else _poisoned(shape, rng)
    return feeds


def assert_same_specials(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """NaN, +Inf and -Inf at the same positions; the finite values within the float32 tolerance."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        mismatch = test(got) != test(want)
        assert not mismatch.any(), (f"{what}: {name} at {int(mismatch.sum())} positions differ "
                                    f"(reference {int(test(want).sum())}, got {int(test(got).sum())})")
    tolerance = tolerance_for("float32")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=tolerance.rtol, atol=tolerance.atol, err_msg=what)


def _onnxruntime(model: bytes, feeds) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


TARGETS = [pytest.param(("cpu", ()), id="cpu"),
           pytest.param(("cuda", ()), id="cuda", marks=pytest.mark.gpu),
           pytest.param(("cuda", ("cudnn", "cublaslt")), id="cuda_triton_and_torch", marks=pytest.mark.gpu),
           pytest.param(("cuda", ("triton",)), id="cuda_libraries_and_torch", marks=pytest.mark.gpu)]


def _engine(model: bytes, target):
    device, disabled = target
    config = tk.BuilderConfig(target=tk.Target(device), disabled_tactic_sources=disabled)
    return tk.Builder(config).build(parse_onnx(model))


def _run(engine, feeds) -> np.ndarray:
    return next(iter(engine.create_execution_context().execute(feeds).values()))


# ---- tests --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name, model, fused_kind", CASES, ids=[c[0] for c in CASES])
def test_nan_and_inf_propagate_like_onnxruntime(name, model, fused_kind, target):
    """Failed before the fix for conv_relu and conv_relu_residual_relu (oneDNN's fused ReLU made NaN 0), matmul_gelu
    (PyTorch's CPU GELU gave NaN for +Inf) and attention (PyTorch's fused attention made a row of NaN scores 0)."""
    engine = _engine(model, target)
    assert fused_kind in [step.kind for step in engine.plan.steps]
    feeds = _feeds(model)
    assert_same_specials(_run(engine, feeds), _onnxruntime(model, feeds), name)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "minus_inf"])
def test_an_input_all_nan_or_inf_gives_what_onnxruntime_gives(fill, target):
    """The reported case: an all-NaN image through convolution + ReLU gave zeros (onnxruntime: NaN everywhere)."""
    model = CASES[0][1]
    feeds = _feeds(model, fill=fill)
    assert_same_specials(_run(_engine(model, target), feeds), _onnxruntime(model, feeds))


@pytest.mark.parametrize("target", TARGETS)
def test_one_nan_pixel_spreads_through_convolutions_as_in_onnxruntime(target):
    """One NaN pixel through two 3x3 convolutions with ReLU: a 5x5 patch of NaN outputs in every channel (the
    UltraFace finding: onnxruntime 1,848 NaN scores, tensorkiln none)."""
    model = CASES[7][1]
    feeds = {"x": RNG.standard_normal((1, 3, 9, 9)).astype(np.float32)}
    feeds["x"][0, 1, 4, 4] = np.nan
    want = _onnxruntime(model, feeds)
    assert np.isnan(want).sum() == 4 * 25
    assert_same_specials(_run(_engine(model, target), feeds), want)


def test_a_masked_out_row_of_attention_is_nan_as_unfused():
    """Every key of query row 2 masked with -Inf: softmax of a row of -Inf is NaN in the ONNX graph (and in
    onnxruntime); PyTorch's attention returned zeros there before the fix. The other rows stay finite."""
    model = _attention(mask=True)
    rng = np.random.default_rng(3)
    feeds = {n: rng.standard_normal((1, 2, 5, 8)).astype(np.float32) for n in ("q", "k", "v")}
    feeds["mask"] = np.zeros((1, 1, 5, 5), np.float32)
    feeds["mask"][0, 0, 2, :] = -np.inf
    feeds["mask"][0, 0, 3, 1:] = -np.inf  # one key left: a finite row
    want = _onnxruntime(model, feeds)
    assert np.isnan(want[0, :, 2]).all() and np.isfinite(np.delete(want, 2, axis=2)).all()
    assert_same_specials(_run(_engine(model, ("cpu", ())), feeds), want)


# ---- max pooling: the definition as reference (see the module docstring) -----------------------------------------
def _max_pool_reference(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    padded = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    return windows[:, :, ::stride, ::stride].max(axis=(-2, -1))  # np.max: NaN wherever the window holds one


def test_onnxruntime_max_pool_nan_depends_on_the_position():
    """Why max pooling is checked against its definition: onnxruntime keeps a NaN of a 2x2 window only in its last
    cell. If this starts failing, onnxruntime changed; compare max pooling with it instead."""
    model = _model([_node("MaxPool", ["x"], "y", kernel_shape=[2, 2])], {"x": (1, 1, 2, 2)})
    results = []
    for position in range(4):
        x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
        x.reshape(-1)[position] = np.nan
        results.append(bool(np.isnan(_onnxruntime(model, {"x": x})).all()))
    assert results == [False, False, False, True]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("after_conv", [False, True], ids=["nchw", "nhwc_after_conv"])
def test_max_pooling_over_a_window_with_nan_is_nan(after_conv, target):
    pool = _node("MaxPool", ["c" if after_conv else "x"], "y", kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 1, 1, 1])
    if after_conv:  # a depthwise 1x1 convolution by 1 makes the pooling's input NHWC without changing a value
        ones = _const("ones", np.ones((3, 1, 1, 1)))
        model = _model([_node("Conv", ["x", "ones"], "c", group=3), pool], IMAGE, [ones])
    else:
        model = _model([pool], IMAGE)
    feeds = _feeds(model)
    got = _run(_engine(model, target), feeds)
    assert_same_specials(got, _max_pool_reference(feeds["x"], 3, 2, 1))
    assert np.isnan(got).any()


@pytest.mark.parametrize("target", TARGETS)
def test_global_max_pooling_of_a_channel_with_nan_is_nan(target):
    model = _model([_node("GlobalMaxPool", ["x"], "y")], IMAGE)
    feeds = _feeds(model)
    got = _run(_engine(model, target), feeds)
    assert_same_specials(got, feeds["x"].max(axis=(2, 3), keepdims=True))
    assert np.isnan(got).sum() == 2  # the two NaN land in two channels; the +Inf channel gives +Inf
