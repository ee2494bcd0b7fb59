"""Write the small TFLite models of tests/importers/tflite/data and their reference outputs.

Each case is a tiny tf.function converted with TensorFlow's TFLiteConverter (float; int8 with a representative
data set; dynamic-range "hybrid", float16 weights or int8 with float inputs and outputs where named), run by
tf.lite.Interpreter on random inputs. The test suite then needs only the light `tflite` package: the .tflite
files and the interpreter's outputs are committed.

Ops the converter never emits (it folds SHAPE, FILL, RANGE... into constants) are written directly instead: see
GraphWriter in tflite_written_fixtures.py.

    python scripts/make_tflite_fixtures.py [case ...]     (needs tensorflow-cpu; written with 2.21.0)

Each <case>.npz holds input:<name>, output:<name> (in the signature's order), `target` (the TFLite op names the
case exists to cover, checked to be in the model) and `tensorflow` (the version that made it)."""
from __future__ import annotations

import inspect
import sys

import numpy as np
import tensorflow as tf

from tflite_fixture_common import OUT, RNG, op_names
from tflite_written_fixtures import WRITTEN, write_direct

F = tf.float32


def spec(*shape, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype)


def const(*shape, scale=0.5):
    return tf.constant(RNG.standard_normal(shape).astype(np.float32) * scale)


def c4(x, *args, **kw):  # a conv filter helper
    return const(*args, **kw)


# name -> (function, input specs, target ops, input kind ("normal" or "positive"), variants)
CASES: dict[str, tuple] = {}


def case(name, specs, targets, kind="normal", variants=("float",)):
    def register(fn):
        CASES[name] = (fn, specs, targets, kind, variants)
        return fn
    return register


Q = ("float", "int8")  # float model and a full-integer one with int8 inputs and outputs
W1 = c4(None, 3, 3, 3, 5)
W_DW = const(3, 3, 4, 2)
W_T = const(3, 3, 6, 4)
W_FC = const(12, 7)
W_BIG = const(3, 3, 16, 32, scale=0.1)
W_FC_BIG = const(64, 40, scale=0.1)


@case("conv_same_relu", [spec(1, 9, 11, 3)], ["CONV_2D"], variants=Q)
def _(x):
    return tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME") + const(5))


@case("conv_valid_stride2_dilated", [spec(1, 13, 12, 3)], ["CONV_2D"])
def _(x):
    return tf.nn.conv2d(x, W1, 2, "VALID"), tf.nn.conv2d(x, W1, 1, "VALID", dilations=2)


@case("conv_stride2_same_relu6", [spec(1, 10, 9, 3)], ["CONV_2D"], variants=Q)
def _(x):
    return tf.nn.relu6(tf.nn.conv2d(x, W1, 2, "SAME"))


@case("conv_hybrid", [spec(1, 8, 7, 16)], ["CONV_2D"], variants=("hybrid",))
def _(x):
    return tf.nn.conv2d(x, W_BIG, 1, "SAME")


@case("depthwise_conv", [spec(1, 9, 8, 4)], ["DEPTHWISE_CONV_2D"], variants=Q)
def _(x):
    return tf.nn.depthwise_conv2d(x, W_DW, [1, 1, 1, 1], "SAME") + const(8)


@case("depthwise_conv_stride2_valid", [spec(1, 11, 10, 4)], ["DEPTHWISE_CONV_2D"])
def _(x):
    return tf.nn.relu(tf.nn.depthwise_conv2d(x, W_DW, [1, 2, 2, 1], "VALID"))


@case("transpose_conv_same", [spec(1, 5, 6, 4)], ["TRANSPOSE_CONV"], variants=Q)
def _(x):
    return tf.nn.conv2d_transpose(x, W_T, [1, 10, 12, 6], 2, "SAME")


@case("transpose_conv_valid", [spec(1, 4, 5, 4)], ["TRANSPOSE_CONV"])
def _(x):
    return tf.nn.conv2d_transpose(x, W_T, [1, 9, 11, 6], 2, "VALID")


@case("fully_connected", [spec(3, 12)], ["FULLY_CONNECTED"], variants=Q)
def _(x):
    return tf.nn.relu(tf.matmul(x, W_FC) + const(7))


@case("fully_connected_3d", [spec(2, 3, 12)], ["FULLY_CONNECTED"])
def _(x):
    return tf.tensordot(x, W_FC, 1)


@case("fully_connected_hybrid", [spec(2, 64)], ["FULLY_CONNECTED"], variants=("hybrid",))
def _(x):
    return tf.matmul(x, W_FC_BIG)


@case("batch_matmul", [spec(2, 3, 5), spec(2, 4, 5)], ["BATCH_MATMUL"])
def _(a, b):
    return tf.matmul(a, b, transpose_b=True)


BINARY = {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply, "div": tf.divide, "maximum": tf.maximum,
          "minimum": tf.minimum, "squared_difference": tf.math.squared_difference}
for _name, _fn in BINARY.items():
    case(f"{_name}", [spec(2, 3, 4), spec(1, 3, 4)], [_name.upper()],
         variants=Q if _name in ("add", "sub", "mul", "maximum", "minimum") else ("float",))(
        lambda a, b, _fn=_fn: _fn(a, b))


@case("add_relu_fused", [spec(2, 5), spec(2, 5)], ["ADD"])
def _(a, b):
    return tf.nn.relu(a + b)


@case("mul_relu6_fused", [spec(2, 5), spec(2, 5)], ["MUL"])
def _(a, b):
    return tf.nn.relu6(a * b)


@case("pow", [spec(2, 5), spec(2, 5)], ["POW"], kind="positive")
def _(a, b):
    return tf.pow(a, b)


@case("floor_div", [spec(2, 5), spec(2, 5)], ["FLOOR_DIV"])
def _(a, b):
    return tf.math.floordiv(a * 5.0, b)


@case("floor_mod", [spec(2, 5), spec(2, 5)], ["FLOOR_MOD"])
def _(a, b):
    return tf.math.floormod(a * 5.0, b)


COMPARE = {"equal": tf.equal, "not_equal": tf.not_equal, "less": tf.less, "less_equal": tf.less_equal,
           "greater": tf.greater, "greater_equal": tf.greater_equal}
for _name, _fn in COMPARE.items():
    case(_name, [spec(3, 4), spec(3, 4)], [_name.upper(), "CAST"])(
        lambda a, b, _fn=_fn: tf.cast(_fn(tf.round(a), tf.round(b)), tf.float32))


@case("logical", [spec(3, 4, dtype=tf.bool), spec(3, 4, dtype=tf.bool)], ["LOGICAL_AND", "LOGICAL_OR", "LOGICAL_NOT"],
      kind="bool")
def _(a, b):
    return tf.logical_and(a, b), tf.logical_or(a, b), tf.logical_not(a)


UNARY = {"abs": tf.abs, "neg": tf.negative, "exp": tf.exp, "log": tf.math.log, "sqrt": tf.sqrt,
         "rsqrt": tf.math.rsqrt, "sin": tf.sin, "cos": tf.cos, "floor": tf.floor, "ceil": tf.math.ceil,
         "round": tf.round, "sign": tf.sign, "square": tf.square, "elu": tf.nn.elu, "logistic": tf.sigmoid,
         "tanh": tf.tanh, "relu": tf.nn.relu, "relu6": tf.nn.relu6, "leaky_relu": lambda x: tf.nn.leaky_relu(x, 0.3),
         "softmax": tf.nn.softmax, "log_softmax": tf.nn.log_softmax}
POSITIVE = {"log", "sqrt", "rsqrt"}
QUANTIZED_UNARY = {"logistic", "tanh", "relu", "relu6", "leaky_relu", "softmax", "abs", "neg"}
for _name, _fn in UNARY.items():
    case(_name, [spec(2, 3, 7)], [_name.upper()], kind="positive" if _name in POSITIVE else "normal",
         variants=Q if _name in QUANTIZED_UNARY else ("float",))(lambda x, _fn=_fn: _fn(x))


@case("relu_n1_to_1", [spec(2, 9)], ["RELU_N1_TO_1"])
def _(x):
    return tf.minimum(tf.maximum(x, -1.0), 1.0)


@case("relu_0_to_1", [spec(2, 9)], ["RELU_0_TO_1"])
def _(x):
    return tf.minimum(tf.maximum(x, 0.0), 1.0)


@case("hard_swish", [spec(1, 4, 4, 3)], ["HARD_SWISH"], variants=Q)
def _(x):
    x = x * 4.0
    return x * tf.nn.relu6(x + 3.0) / 6.0


@case("gelu", [spec(2, 9)], ["GELU"])
def _(x):
    return tf.nn.gelu(x * 2.0, approximate=False) + tf.nn.gelu(x, approximate=True)


@case("prelu", [spec(1, 4, 5, 3)], ["PRELU"], variants=Q)
def _(x):  # the form the converter fuses (also Keras' PReLU layer): relu(x) + (-alpha) * relu(-x)
    alpha = tf.constant([[[0.1, -0.2, 0.3]]])
    return tf.nn.relu(x) + (-alpha) * tf.nn.relu(-x)


@case("max_pool", [spec(1, 8, 6, 3)], ["QUANTIZE", "MAX_POOL_2D", "DEQUANTIZE"], variants=("float_io_int8",))
def _(x):  # int8 inside, float in and out: QUANTIZE in front and DEQUANTIZE behind (max pooling is exact on the grid)
    return tf.nn.max_pool2d(x, 2, 2, "VALID")


@case("conv", [spec(1, 6, 5, 3)], ["DEQUANTIZE", "CONV_2D"], variants=("float16",))
def _(x):  # float16 weights, DEQUANTIZE'd to float32 in front of the convolution
    return tf.nn.conv2d(x, W1, 1, "SAME")


@case("max_pool_same", [spec(1, 9, 8, 3)], ["MAX_POOL_2D"], variants=Q)
def _(x):
    return tf.nn.max_pool2d(x, 3, 2, "SAME")


@case("avg_pool", [spec(1, 9, 8, 3)], ["AVERAGE_POOL_2D"], variants=Q)
def _(x):
    return tf.nn.avg_pool2d(x, 3, 2, "SAME")


@case("avg_pool_valid", [spec(1, 8, 7, 3)], ["AVERAGE_POOL_2D"])
def _(x):
    return tf.nn.avg_pool2d(x, (3, 2), (2, 1), "VALID")


REDUCE = {"mean": tf.reduce_mean, "sum": tf.reduce_sum, "reduce_max": tf.reduce_max, "reduce_min": tf.reduce_min,
          "reduce_prod": tf.reduce_prod}
for _name, _fn in REDUCE.items():
    case(_name, [spec(2, 3, 4, 5)], [_name.upper()], variants=Q if _name in ("mean", "reduce_max") else ("float",))(
        lambda x, _fn=_fn: (_fn(x, axis=[1, 2], keepdims=True), _fn(x, axis=-1)))


@case("reduce_any", [spec(3, 4)], ["REDUCE_ANY"])
def _(x):
    return tf.cast(tf.reduce_any(x > 0.5, axis=1), F)


@case("reshape", [spec(2, 1, 6)], ["RESHAPE"])
def _(x):
    y = tf.reshape(x, [3, 4]) * 2.0
    return tf.expand_dims(y, 1) + 1.0, tf.squeeze(x, axis=1) - 1.0


@case("transpose", [spec(2, 3, 4, 5)], ["TRANSPOSE"], variants=Q)
def _(x):
    return tf.transpose(x, [0, 3, 1, 2])


@case("concatenation", [spec(2, 3, 4), spec(2, 3, 2)], ["CONCATENATION"], variants=Q)
def _(a, b):
    return tf.concat([a, b, a], axis=-1)


@case("split", [spec(2, 6, 3)], ["SPLIT"])
def _(x):
    a, b, c = tf.split(x, 3, axis=1)
    return a * 2.0, b, c - 1.0


@case("split_v", [spec(2, 7, 3)], ["SPLIT_V"])
def _(x):
    a, b = tf.split(x, [2, 5], axis=1)
    return a * 2.0, b


@case("pack_unpack", [spec(2, 3), spec(2, 3)], ["PACK", "UNPACK"])
def _(a, b):
    u0, u1, u2 = tf.unstack(a * b, axis=1)
    return tf.stack([a, b], axis=1), u0 + u1 * u2


@case("strided_slice", [spec(2, 9, 8, 3)], ["STRIDED_SLICE"], variants=Q)
def _(x):
    return x[:, 1:8:2, ::-1, 0], x[1, ..., 1:], x[:, tf.newaxis, -3:]


@case("slice", [spec(3, 7, 5)], ["SLICE"])
def _(x):
    return tf.slice(x, [1, 2, 0], [2, -1, 3])


@case("pad", [spec(1, 4, 5, 3)], ["PAD"], variants=Q)
def _(x):
    return tf.pad(x, [[0, 0], [1, 2], [2, 0], [0, 1]])


@case("padv2", [spec(2, 4, 3)], ["PADV2"])
def _(x):
    return tf.pad(x, [[0, 1], [1, 2], [0, 0]], constant_values=1.5)


@case("mirror_pad", [spec(1, 5, 6, 2)], ["MIRROR_PAD"])
def _(x):
    return (tf.pad(x, [[0, 0], [2, 1], [1, 2], [0, 0]], mode="REFLECT"),
            tf.pad(x, [[0, 0], [2, 1], [1, 3], [0, 0]], mode="SYMMETRIC"))


@case("tile", [spec(2, 3)], ["TILE"])
def _(x):
    return tf.tile(x, [2, 3])


@case("broadcast_to", [spec(1, 3)], ["BROADCAST_TO"])
def _(x):
    return tf.broadcast_to(x, [4, 2, 3])


@case("gather", [spec(5, 4)], ["GATHER"])
def _(x):
    return tf.gather(x, [4, 0, 2, 2], axis=0), tf.gather(x, [[3, 1]], axis=1)


@case("gather_nd", [spec(4, 3, 2)], ["GATHER_ND"])
def _(x):
    return tf.gather_nd(x, [[0, 1], [3, 2], [1, 0]])


@case("arg_max_min", [spec(3, 7)], ["ARG_MAX", "ARG_MIN"])
def _(x):
    return tf.argmax(x, axis=1, output_type=tf.int32), tf.argmin(x, axis=0)


@case("cast", [spec(3, 4)], ["CAST"])
def _(x):
    return tf.cast(tf.cast(x * 10.0, tf.int32), tf.float32)


@case("resize_bilinear", [spec(1, 4, 5, 2)], ["RESIZE_BILINEAR"], variants=Q)
def _(x):
    return tf.compat.v1.image.resize_bilinear(x, [7, 9], half_pixel_centers=True)


@case("resize_bilinear_modes", [spec(1, 4, 5, 2)], ["RESIZE_BILINEAR"])
def _(x):
    return (tf.compat.v1.image.resize_bilinear(x, [8, 10], align_corners=True),
            tf.compat.v1.image.resize_bilinear(x, [6, 9]))


@case("resize_nearest", [spec(1, 4, 5, 2)], ["RESIZE_NEAREST_NEIGHBOR"], variants=Q)
def _(x):
    return tf.compat.v1.image.resize_nearest_neighbor(x, [8, 10])


@case("resize_nearest_modes", [spec(1, 4, 5, 2)], ["RESIZE_NEAREST_NEIGHBOR"])
def _(x):
    return (tf.compat.v1.image.resize_nearest_neighbor(x, [7, 9], align_corners=True),
            tf.compat.v1.image.resize_nearest_neighbor(x, [7, 9], half_pixel_centers=True))


@case("depth_space", [spec(1, 4, 6, 8)], ["DEPTH_TO_SPACE", "SPACE_TO_DEPTH"])
def _(x):
    return tf.nn.depth_to_space(x, 2), tf.nn.space_to_depth(x, 2)


@case("space_batch", [spec(1, 6, 4, 3)], ["SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"])
def _(x):
    y = tf.space_to_batch_nd(x, [2, 2], [[1, 1], [0, 2]])
    return y * 2.0, tf.batch_to_space(y, [2, 2], [[1, 1], [0, 2]])


@case("select", [spec(3, 4), spec(3, 4)], ["SELECT"])
def _(a, b):
    return tf.where(a > b, a, b * 2.0)


@case("select_v2", [spec(3, 4), spec(1, 4)], ["SELECT_V2"])
def _(a, b):
    return tf.where(a > 0.0, a, b)


@case("top_k", [spec(3, 8)], ["TOPK_V2"])
def _(x):
    values, indices = tf.math.top_k(x, 3)
    return values, indices


@case("cumsum", [spec(3, 5)], ["CUMSUM"])
def _(x):
    return tf.cumsum(x, axis=1), tf.cumsum(x, axis=0, exclusive=True, reverse=True)


@case("add_n", [spec(2, 3), spec(2, 3), spec(2, 3)], ["ADD_N"])
def _(a, b, c):
    return tf.add_n([a, b, c])


@case("l2_normalization", [spec(2, 3, 6)], ["L2_NORMALIZATION"])
def _(x):
    return tf.math.l2_normalize(x, axis=-1)


@case("local_response_normalization", [spec(1, 3, 4, 7)], ["LOCAL_RESPONSE_NORMALIZATION"])
def _(x):
    return tf.nn.local_response_normalization(x, depth_radius=2, bias=1.5, alpha=0.3, beta=0.6)


@case("reverse_v2", [spec(2, 3, 4)], ["REVERSE_V2"])
def _(x):
    return tf.reverse(x, [1, 2])


@case("one_hot", [spec(4, dtype=tf.int32)], ["ONE_HOT"], kind="indices")
def _(i):
    return tf.one_hot(i, 5, on_value=2.0, off_value=-1.0)


def representative(specs, kind):
    def generate():
        for _ in range(32):
            yield [make_input(s, kind) for s in specs]
    return generate


def make_input(s, kind):
    shape = [int(d) for d in s.shape]
    if kind == "bool":
        return RNG.standard_normal(shape) > 0
    if kind == "indices":
        return RNG.integers(0, 5, shape).astype(np.int32)
    value = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(value) + 0.2 if kind == "positive" else value


def convert(fn, specs, kind, variant) -> bytes:
    concrete = tf.function(fn).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    if variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative(specs, kind)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant == "float_io_int8":  # int8 kernels, float inputs and outputs
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative(specs, kind)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif variant == "float16":  # float16 weights, float32 activations
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "hybrid":  # int8 weights, float activations (dynamic range)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def run(model: bytes, names: list[str], inputs: list[np.ndarray]) -> tuple[dict, dict]:
    interpreter = tf.lite.Interpreter(model_content=model)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    feeds = {}
    for name, value in zip(names, inputs):  # the signature names its inputs after the function's arguments
        detail = details[name]
        assert tuple(detail["shape"]) == value.shape, (name, detail["shape"], value.shape)
        if detail["dtype"] in (np.int8, np.uint8) and value.dtype.kind == "f":
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            value = np.clip(np.round(value / scale) + zero, info.min, info.max).astype(detail["dtype"])
        feeds[name] = value
    return feeds, runner(**feeds)


def main(selected: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, (fn, specs, targets, kind, variants) in CASES.items():
        if selected and name not in selected:
            continue
        for variant in variants:
            stem = name if variant == "float" else f"{name}_{variant}"
            try:
                model = convert(fn, specs, kind, variant)
            except Exception as error:  # noqa: BLE001  (reported with the others below)
                missing.append(f"{stem}: conversion failed: {type(error).__name__}: {str(error)[:300]}")
                continue
            ops = op_names(model)
            absent = [t for t in targets if t not in ops]
            if absent:
                missing.append(f"{stem}: {absent} not in {sorted(ops)}")
                continue
            inputs = [make_input(s, kind) for s in specs]
            feeds, outputs = run(model, list(inspect.signature(fn).parameters), inputs)
            (OUT / f"{stem}.tflite").write_bytes(model)
            arrays = {f"input:{k}": v for k, v in feeds.items()} | {f"output:{k}": v for k, v in outputs.items()}
            np.savez(OUT / f"{stem}.npz", target=np.array(targets), tensorflow=np.array(tf.__version__), **arrays)
            print(f"{stem}: {sorted(ops)} {len(model)} bytes")
    for name, (fn, targets) in WRITTEN.items():
        if not selected or name in selected:
            missing.extend(filter(None, [write_direct(name, fn, targets)]))
    if missing:
        print("cases whose target op the converter did not write (not saved):", *missing, sep="\n  ")


if __name__ == "__main__":
    main(sys.argv[1:])
