"""The ONNX operators added for coverage (attention, signal processing, geometry, quantized products, ...), each
checked against onnxruntime on random inputs of awkward shapes; where onnxruntime lacks the operator or its
opset, onnx's reference evaluator is the reference."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx

F32 = TensorProto.FLOAT
RNG = np.random.default_rng(7)


def _onnxruntime(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = min(model.ir_version, 10)  # the newest IR version onnxruntime reads
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _model(node, inputs, outputs, opset, initializers=()):
    graph = helper.make_graph([node], node.op_type.lower(), inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # output types from onnx's shape inference: onnxruntime refuses outputs of undefined type
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for output in model.graph.output:
        if output.name in types:
            output.type.CopyFrom(types[output.name])
    return model


def check(node, feed: dict, opset: int, initializers: dict | None = None, rtol=1e-4, atol=1e-5,
          reference: str = "onnxruntime"):
    """Build `node` into an engine, run it on `feed` and compare every output with the reference: onnxruntime,
    or onnx's reference evaluator (reference="onnx") for operators or opsets onnxruntime does not have."""
    initializers = initializers or {}
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feed.items()]
    outputs = [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None) for name in node.output if name]
    model = _model(node, inputs, outputs, opset, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    expected = ReferenceEvaluator(model).run(None, feed) if reference == "onnx" else _onnxruntime(model, feed)
    engine = tk.Builder().build(parse_onnx(model))
    produced = engine.create_execution_context().execute(feed)
    for name, ref in zip([o for o in node.output if o], expected):
        out = produced[name]
        assert out.shape == ref.shape, f"{name}: shape {out.shape} != {ref.shape}"
        assert out.dtype == ref.dtype, f"{name}: dtype {out.dtype} != {ref.dtype}"
        if np.issubdtype(ref.dtype, np.floating):
            np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(out, ref, err_msg=name)
    return produced


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# ---- attention and transformer operators ---------------------------------------------------------------------
@pytest.mark.parametrize("case", ["plain", "gqa_causal_past", "bool_mask_softcap", "3d_window", "qk_mode3"])
def test_attention(case):
    b, sq, skv, d = 2, 3, 5, 8
    feed = {"q": randn(b, 4, sq, d), "k": randn(b, 4, skv, d), "v": randn(b, 4, skv, 7)}
    inputs, attrs, outputs, opset = ["q", "k", "v"], {}, ["y"], 23
    if case == "gqa_causal_past":
        feed["k"], feed["v"] = randn(b, 2, skv, d), randn(b, 2, skv, d)
        feed["past_key"], feed["past_value"] = randn(b, 2, 4, d), randn(b, 2, 4, d)
        inputs += ["", "past_key", "past_value"]
        attrs, outputs = {"is_causal": 1}, ["y", "present_key", "present_value"]
    elif case == "bool_mask_softcap":
        feed["mask"] = RNG.random((sq, skv - 2)) > 0.3  # shorter than the keys: the rest is masked
        inputs.append("mask")
        attrs = {"softcap": 2.5, "scale": 0.3}
    elif case == "3d_window":
        feed = {"q": randn(b, sq, 4 * d), "k": randn(b, skv, 2 * d), "v": randn(b, skv, 2 * 6)}
        attrs, opset = {"q_num_heads": 4, "kv_num_heads": 2, "left_window_size": 1, "right_window_size": 0}, 25
    elif case == "qk_mode3":
        feed["mask"] = randn(1, 4, sq, skv)
        inputs.append("mask")
        attrs, outputs = {"qk_matmul_output_mode": 3}, ["y", "", "", "qk"]
    check(helper.make_node("Attention", inputs, outputs, **attrs), feed, opset, reference="onnx")


@pytest.mark.parametrize("interleaved,three_d", [(0, False), (1, True)])
def test_rotary_embedding(interleaved, three_d):
    b, s, h, d, rotary = 2, 5, 3, 10, 6
    x = randn(b, s, h * d) if three_d else randn(b, h, s, d)
    feed = {"x": x, "cos": randn(11, rotary // 2), "sin": randn(11, rotary // 2),
            "pos": RNG.integers(0, 11, (b, s)).astype(np.int64)}
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rotary, **({"num_heads": h} if three_d else {})}
    check(helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "pos"], ["y"], **attrs), feed, 23)


@pytest.mark.parametrize("axis", [-1, 1])
def test_rms_normalization(axis):
    x = randn(3, 5, 7)
    scale = randn(*x.shape[axis:]) if axis != -1 else randn(7)
    node = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=axis, epsilon=1e-3)
    check(node, {"x": x, "scale": scale}, 23)


@pytest.mark.parametrize("rule", ["linear", "gated_delta"])
def test_linear_attention(rule):
    b, t, hq, hkv, dk, dv = 2, 5, 4, 2, 3, 5
    feed = {"q": randn(b, t, hq * dk), "k": randn(b, t, hkv * dk), "v": randn(b, t, hkv * dv),
            "state": randn(b, hkv, dk, dv)}
    inputs = ["q", "k", "v", "state"]
    if rule == "gated_delta":
        feed["decay"], feed["beta"] = -np.abs(randn(b, t, hkv)), np.abs(randn(b, t, hkv))
        inputs += ["decay", "beta"]
    node = helper.make_node("LinearAttention", inputs, ["y", "present"], q_num_heads=hq, kv_num_heads=hkv,
                            update_rule=rule)
    check(node, feed, 27, reference="onnx")


def test_causal_conv_with_state():
    feed = {"x": randn(2, 3, 7), "w": randn(3, 1, 4), "bias": randn(3), "state": randn(2, 3, 3)}
    node = helper.make_node("CausalConvWithState", ["x", "w", "bias", "state"], ["y", "present"], activation="silu")
    check(node, feed, 27, reference="onnx")


def test_swiglu():
    check(helper.make_node("SwiGLU", ["a", "b"], ["y"], alpha=1.7), {"a": randn(3, 5), "b": randn(3, 5)}, 28,
          reference="onnx")


# ---- signal processing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("inverse,onesided,complex_input", [(0, 0, True), (0, 1, False), (1, 0, True), (1, 1, True)])
def test_dft(inverse, onesided, complex_input):
    x = randn(2, 7, 3, 2 if complex_input else 1)
    node = helper.make_node("DFT", ["x", "", "axis"], ["y"], inverse=inverse, onesided=onesided)
    check(node, {"x": x}, 20, initializers={"axis": np.array(1, np.int64)}, rtol=1e-4, atol=1e-4)


def test_stft_with_window():
    feed = {"signal": randn(2, 37, 1)}
    inits = {"step": np.array(5, np.int64), "window": np.hanning(9).astype(np.float32)}
    node = helper.make_node("STFT", ["signal", "step", "window"], ["y"], onesided=1)
    check(node, feed, 17, initializers=inits, atol=1e-4)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows(op, periodic):
    node = helper.make_node(op, ["size"], ["y"], periodic=periodic)
    check(node, {}, 17, initializers={"size": np.array(11, np.int64)}, atol=1e-6)


def test_mel_weight_matrix():
    inits = {"bins": np.array(7, np.int64), "dft": np.array(64, np.int64), "rate": np.array(8000, np.int64),
             "low": np.array(50.0, np.float32), "high": np.array(3500.0, np.float32)}
    check(helper.make_node("MelWeightMatrix", list(inits), ["y"]), {}, 17, initializers=inits)


# ---- scans, selections and caches ----------------------------------------------------------------------------
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 1)])
def test_cum_prod(exclusive, reverse):
    node = helper.make_node("CumProd", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    check(node, {"x": randn(3, 5, 2)}, 26, initializers={"axis": np.array(1, np.int64)}, reference="onnx")


@pytest.mark.parametrize("axis", [None, 1])
def test_compress_with_run_time_condition(axis):
    x = randn(3, 5)
    condition = np.array([True, False, True, True, False][: 5 if axis == 1 else 4])
    node = helper.make_node("Compress", ["x", "c"], ["y"], **({} if axis is None else {"axis": axis}))
    check(node, {"x": x, "c": condition}, 11)


def test_reverse_sequence():
    x = randn(4, 3, 2)
    lengths = np.array([4, 1, 3], np.int64)
    check(helper.make_node("ReverseSequence", ["x", "lens"], ["y"], batch_axis=1, time_axis=0),
          {"x": x, "lens": lengths}, 10)


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode):
    feed = {"cache": randn(2, 3, 7, 4), "update": randn(2, 3, 3, 4),
            "idx": np.array([1, 4] if mode == "linear" else [5, 6], np.int64)}
    check(helper.make_node("TensorScatter", ["cache", "update", "idx"], ["y"], mode=mode), feed, 24,
          reference="onnx")


def test_bitcast():
    check(helper.make_node("BitCast", ["x"], ["y"], to=TensorProto.INT32), {"x": randn(3, 5)}, 26, reference="onnx")


# ---- geometry ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [[5, 2], [2, 9]])
def test_center_crop_pad(shape):
    node = helper.make_node("CenterCropPad", ["x", "shape"], ["y"], axes=[1, 2])
    check(node, {"x": randn(2, 4, 6)}, 18, initializers={"shape": np.array(shape, np.int64)})


def test_col2im():
    # 2 channels, 2x3 blocks, image 5x7 padded by 1, stride 2, dilation (1, 2)
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2],
                            dilations=[1, 2])
    blocks = ((5 + 2 - 2) // 2 + 1) * ((7 + 2 - 5) // 2 + 1)
    check(node, {"x": randn(1, 2 * 6, blocks)}, 18,
          initializers={"image": np.array([5, 7], np.int64), "block": np.array([2, 3], np.int64)})


@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid(align_corners):
    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=align_corners)
    check(node, {"theta": randn(2, 2, 3)}, 20, initializers={"size": np.array([2, 3, 5, 7], np.int64)})


@pytest.mark.parametrize("output_shape", [None, [2, 3, 7, 9]])
def test_max_unpool_after_max_pool(output_shape):
    x = randn(2, 3, 6, 8)
    pool = helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], strides=[2, 2])
    values, indices = ReferenceEvaluator(_model(pool, [helper.make_tensor_value_info("x", F32, x.shape)],
                                                [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                                                 for n in ("pooled", "indices")], 12)).run(None, {"x": x})
    inputs, inits = ["v", "i"], {}
    if output_shape is not None:
        inputs.append("shape")
        inits["shape"] = np.array(output_shape, np.int64)
    node = helper.make_node("MaxUnpool", inputs, ["y"], kernel_shape=[2, 2], strides=[2, 2])
    # onnxruntime places the indices in the padded output_shape, the ONNX reference and conformance cases in the
    # unpooled shape before padding; tensorkiln follows the conformance cases
    check(node, {"v": values, "i": indices}, 11, initializers=inits,
          reference="onnxruntime" if output_shape is None else "onnx")


@pytest.mark.parametrize("mode,transform", [("avg", "half_pixel"), ("max", "output_half_pixel")])
def test_roi_align(mode, transform):
    x = randn(2, 3, 9, 11)
    rois = np.array([[0.5, 1.0, 6.3, 7.2], [2.0, 0.0, 10.5, 8.9], [-1.0, -2.0, 3.0, 2.0]], np.float32)
    feed = {"x": x, "rois": rois, "batch": np.array([1, 0, 1], np.int64)}
    node = helper.make_node("RoiAlign", ["x", "rois", "batch"], ["y"], mode=mode, output_height=3, output_width=4,
                            sampling_ratio=2, spatial_scale=0.8, coordinate_transformation_mode=transform)
    check(node, feed, 16, reference="onnx")


def test_max_roi_pool():
    x = randn(2, 3, 9, 11)
    rois = np.array([[1, 0.5, 1.0, 6.3, 7.2], [0, 2.0, 0.0, 10.5, 8.9], [1, -3.0, -2.0, 3.0, 2.5],
                     [0, 4.0, 4.0, 4.0, 4.0]], np.float32)
    node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], pooled_shape=[3, 4], spatial_scale=0.8)
    check(node, {"x": x, "rois": rois}, 12)


def test_deform_conv_with_mask_and_offset_groups():
    feed = {"x": randn(1, 4, 6, 7), "w": randn(6, 2, 3, 3), "offset": randn(1, 2 * 2 * 9, 4, 5),
            "bias": randn(6), "mask": RNG.random((1, 2 * 9, 4, 5)).astype(np.float32)}
    node = helper.make_node("DeformConv", ["x", "w", "offset", "bias", "mask"], ["y"], group=2, offset_group=2,
                            pads=[0, 0, 0, 0], strides=[1, 1], kernel_shape=[3, 3])
    check(node, feed, 19, reference="onnx", atol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias(mode):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode, antialias=1)
    check(node, {"x": randn(1, 2, 13, 9)}, 18, initializers={"scales": np.array([1, 1, 0.4, 0.7], np.float32)},
          reference="onnx")


def test_resize_tf_crop_and_resize_with_extrapolation():
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=3.0)
    roi = np.array([0, 0, 0.2, -0.3, 1, 1, 0.9, 1.1], np.float32)
    # the ONNX reference maps output positions with the unrounded length scale * d (as the conformance cases do);
    # onnxruntime uses the rounded one, so its samples differ when scale * d is not an integer
    check(node, {"x": randn(1, 1, 6, 5)}, 13,
          initializers={"roi": roi, "scales": np.array([1, 1, 1.5, 1.3], np.float32)}, reference="onnx")


# ---- quantized products --------------------------------------------------------------------------------------
def test_dynamic_quantize_linear():
    check(helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "scale", "zero"]), {"x": randn(3, 7) * 4}, 11)


def _uint8(*shape):
    return RNG.integers(0, 256, shape).astype(np.uint8)


def test_qlinear_matmul():
    inits = {"a_scale": np.array(0.02, np.float32), "a_zero": np.array(120, np.uint8),
             "b_scale": np.array(0.03, np.float32), "b_zero": np.array(131, np.uint8),
             "y_scale": np.array(0.5, np.float32), "y_zero": np.array(125, np.uint8)}
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "y_scale", "y_zero"],
                            ["y"])
    check(node, {"a": _uint8(3, 13), "b": _uint8(13, 5)}, 10, initializers=inits)


def test_qlinear_conv_per_channel():
    inits = {"x_scale": np.array(0.05, np.float32), "x_zero": np.array(100, np.uint8),
             "w_scale": np.array([0.01, 0.02, 0.015], np.float32), "w_zero": np.array([0, 0, 0], np.uint8),
             "y_scale": np.array(0.4, np.float32), "y_zero": np.array(128, np.uint8),
             "bias": np.array([100, -200, 50], np.int32)}
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero",
                                            "bias"], ["y"], pads=[1, 0, 1, 2], strides=[2, 1])
    check(node, {"x": _uint8(1, 2, 7, 5), "w": _uint8(3, 2, 3, 3)}, 10, initializers=inits)


def test_matmul_integer():
    inits = {"a_zero": np.array(3, np.uint8), "b_zero": np.array(9, np.uint8)}
    check(helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"]),
          {"a": _uint8(3, 11), "b": _uint8(11, 4)}, 10, initializers=inits)


def test_matmul_integer_per_row_zero_point():
    # neither onnxruntime nor the ONNX reference implements the per-row zero point of A: numpy is the reference
    a, b, a_zero, b_zero = _uint8(3, 11), _uint8(11, 4), np.array([3, 200, 17], np.uint8), np.array(9, np.uint8)
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])
    inputs = [helper.make_tensor_value_info(n, TensorProto.UINT8, v.shape) for n, v in (("a", a), ("b", b))]
    model = _model(node, inputs,
                   [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                   10, [numpy_helper.from_array(a_zero, "a_zero"), numpy_helper.from_array(b_zero, "b_zero")])
    produced = tk.Builder().build(parse_onnx(model)).create_execution_context().execute({"a": a, "b": b})["y"]
    expected = (a.astype(np.int32) - a_zero.astype(np.int32)[:, None]) @ (b.astype(np.int32) - int(b_zero))
    np.testing.assert_array_equal(produced, expected)


def test_conv_integer_with_padding():
    check(helper.make_node("ConvInteger", ["x", "w", "x_zero"], ["y"], pads=[1, 1, 1, 1]),
          {"x": _uint8(1, 2, 5, 6), "w": _uint8(4, 2, 3, 3)}, 10, initializers={"x_zero": np.array(77, np.uint8)})
