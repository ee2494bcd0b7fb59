"""Seeds: small, real models and the engines built from them, the well-formed inputs every mutation starts from.

Each seed is tiny (an engine of a few kB, a build well under a second) so that a mutation runs in milliseconds,
yet together they reach most of the plan's vocabulary: convolution, batch norm, pooling, GEMM, attention-like
MatMul/Softmax/LayerNorm, a fused pointwise program, shuffles (Slice, Transpose, Concat, Split, Reshape, Gather),
a dynamic batch dimension, and Caffe V1 and V2 nets. `real_seeds` adds the small models of a folder such as
../shared/models where one exists.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# models larger than this are left out of the real seeds: each mutation copies and rebuilds the whole model
REAL_SEED_MAX_BYTES = 600_000


@dataclasses.dataclass(frozen=True)
class CaffeSeed:
    prototxt: str
    caffemodel: bytes  # b"" for a net without trained blobs


@dataclasses.dataclass(frozen=True)
class SeedBundle:
    """Every seed, as bytes, plus the names mutators pick from (tactic ids, layer kinds, dtypes, ...)."""
    onnx_models: dict[str, bytes]
    caffe_nets: dict[str, CaffeSeed]
    engines: dict[str, bytes]
    vocabulary: dict[str, tuple[str, ...]]
    build_errors: dict[str, str] = dataclasses.field(default_factory=dict)  # seed -> why it built no engine


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _model(nodes, name, inputs, outputs, initializers, opset=17) -> bytes:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tensorkiln-fuzz")
    model.ir_version = 8
    return model.SerializeToString()


def _value(name: str, shape, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def onnx_cnn(batch: int | str = 1) -> bytes:
    """Conv + BatchNormalization + Relu + MaxPool + Flatten + Gemm + Softmax: the CNN every engine fuses."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w", _rand(rng, 4, 3, 3, 3)), ("b", _rand(rng, 4)), ("scale", _rand(rng, 4)), ("shift", _rand(rng, 4)),
        ("mean", _rand(rng, 4)), ("var", np.abs(_rand(rng, 4)) + 0.5), ("fc_w", _rand(rng, 5, 64)),
        ("fc_b", _rand(rng, 5))]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1], strides=[1, 1]),
             helper.make_node("BatchNormalization", ["conv", "scale", "shift", "mean", "var"], ["bn"], epsilon=1e-5),
             helper.make_node("Relu", ["bn"], ["relu"]),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["prob"], axis=-1)]
    name = "cnn" if batch == 1 else "cnn_dynamic"
    return _model(nodes, name, [_value("x", [batch, 3, 8, 8])], [_value("prob", [batch, 5])], inits)


def onnx_transformer() -> bytes:
    """LayerNormalization, single-head attention (MatMul, Transpose, Div, Softmax) and an erf-GELU MLP."""
    rng = np.random.default_rng(2)
    d = 8
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("gamma", _rand(rng, d)), ("beta", _rand(rng, d)), ("wq", _rand(rng, d, d)), ("wk", _rand(rng, d, d)),
        ("wv", _rand(rng, d, d)), ("scale", np.array(math.sqrt(d), np.float32)), ("w1", _rand(rng, d, 16)),
        ("b1", _rand(rng, 16)), ("w2", _rand(rng, 16, d)), ("sqrt2", np.array(math.sqrt(2), np.float32)),
        ("one", np.array(1.0, np.float32)), ("half", np.array(0.5, np.float32))]]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["ln", "wq"], ["q"]), helper.make_node("MatMul", ["ln", "wk"], ["k"]),
             helper.make_node("MatMul", ["ln", "wv"], ["v"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Div", ["scores", "scale"], ["scaled"]),
             helper.make_node("Softmax", ["scaled"], ["attn"], axis=-1),
             helper.make_node("MatMul", ["attn", "v"], ["ctx"]),
             helper.make_node("Add", ["ctx", "x"], ["res"]),
             helper.make_node("MatMul", ["res", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Div", ["h1", "sqrt2"], ["h2"]), helper.make_node("Erf", ["h2"], ["h3"]),
             helper.make_node("Add", ["h3", "one"], ["h4"]), helper.make_node("Mul", ["h1", "h4"], ["h5"]),
             helper.make_node("Mul", ["h5", "half"], ["gelu"]),
             helper.make_node("MatMul", ["gelu", "w2"], ["mlp"]), helper.make_node("Add", ["mlp", "res"], ["y"])]
    return _model(nodes, "transformer", [_value("x", [1, 4, d])], [_value("y", [1, 4, d])], inits)


def onnx_pointwise() -> bytes:
    """A chain of elementwise ops over two inputs that fuse_pointwise turns into one generated-program step."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(_rand(rng, 3, 5), "c"), numpy_helper.from_array(np.float32(0.25), "k")]
    nodes = [helper.make_node("Mul", ["a", "b"], ["m"]), helper.make_node("Add", ["m", "c"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["g"]), helper.make_node("Sub", ["g", "k"], ["d"]),
             helper.make_node("Tanh", ["d"], ["t"]), helper.make_node("Max", ["t", "a"], ["mx"]),
             helper.make_node("LeakyRelu", ["mx"], ["y"], alpha=0.1)]
    shape = [2, 3, 5]
    return _model(nodes, "pointwise", [_value("a", shape), _value("b", shape)], [_value("y", shape)], inits)


def onnx_shuffles() -> bytes:
    """Slice, Transpose, Concat, Split, Reshape, Gather, Unsqueeze, with their shapes and indices as int64
    initializers (the values mutations make absurd)."""
    i64 = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    inits = [i64("starts", [1]), i64("ends", [5]), i64("axes", [2]), i64("steps", [2]), i64("split", [2, 4]),
             i64("shape", [2, -1]), i64("indices", [0, 2, 1]), i64("unsq", [0])]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["sl"]),
             helper.make_node("Transpose", ["x"], ["tr"], perm=[0, 2, 1]),
             helper.make_node("Concat", ["x", "x"], ["cat"], axis=1),
             helper.make_node("Split", ["cat", "split"], ["sp0", "sp1"], axis=2),
             helper.make_node("Reshape", ["sp1"], ["rs"]),
             helper.make_node("Reshape", ["tr", "shape"], ["flat"]),
             helper.make_node("Gather", ["flat", "indices"], ["ga"], axis=1),
             helper.make_node("Unsqueeze", ["ga", "unsq"], ["y"])]
    nodes[4].input.append("shape")
    outputs = [_value("sl", None), _value("sp0", None), _value("rs", None), _value("y", None)]
    return _model(nodes, "shuffles", [_value("x", [2, 6, 6])], outputs, inits)


def onnx_models() -> dict[str, bytes]:
    return {"cnn": onnx_cnn(), "cnn_dynamic": onnx_cnn("N"), "transformer": onnx_transformer(),
            "pointwise": onnx_pointwise(), "shuffles": onnx_shuffles()}


# ---- Caffe ---------------------------------------------------------------------------------------------------
LENET_PROTOTXT = """name: "lenet_tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "pool1" bottom: "conv2" top: "sum" eltwise_param { operation: SUM } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "pool1" top: "cat" concat_param { axis: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "cat" top: "pool2" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""

V1_PROTOTXT = """name: "v1_tiny"
input: "data"
input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 6
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 stride: 1 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "slice" type: SLICE bottom: "conv" top: "a" top: "b" slice_param { axis: 1 slice_point: 1 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "b" top: "fc" inner_product_param { num_output: 3 } }
layers { name: "sig" type: SIGMOID bottom: "fc" top: "out" }
"""


def _caffemodel(blobs: dict[str, list[np.ndarray]], v1: bool = False) -> bytes:
    from ..importers.caffe.schema import caffe_pb2

    net = caffe_pb2.NetParameter(name="fuzz")
    for name, arrays in blobs.items():
        layer = net.layers.add(name=name) if v1 else net.layer.add(name=name)
        for array in arrays:
            blob = layer.blobs.add()
            if v1:  # V1 blobs: the legacy (num, channels, height, width), short shapes padded with leading 1s
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + tuple(array.shape)
            else:
                blob.shape.dim.extend(array.shape)
            blob.data.extend(array.reshape(-1).tolist())
    return net.SerializeToString()


def caffe_nets() -> dict[str, CaffeSeed]:
    rng = np.random.default_rng(4)
    lenet = {"conv1": [_rand(rng, 4, 1, 3, 3), _rand(rng, 4)],
             "bn1": [_rand(rng, 4), np.abs(_rand(rng, 4)) + 0.5, np.ones(1, np.float32)],
             "scale1": [_rand(rng, 4), _rand(rng, 4)], "conv2": [_rand(rng, 4, 2, 3, 3), _rand(rng, 4)],
             "ip1": [_rand(rng, 10, 8 * 3 * 3), _rand(rng, 10)]}
    v1 = {"conv": [_rand(rng, 3, 2, 3, 3), _rand(rng, 3)], "fc": [_rand(rng, 3, 2 * 4 * 4), _rand(rng, 3)]}
    return {"lenet": CaffeSeed(LENET_PROTOTXT, _caffemodel(lenet)),
            "v1": CaffeSeed(V1_PROTOTXT, _caffemodel(v1, v1=True))}


# ---- engines and the bundle ----------------------------------------------------------------------------------
def build_engine_from_onnx(model: bytes) -> bytes:
    from ..builder import Builder
    from ..importers.onnx import parse_onnx

    return Builder().build(parse_onnx(model)).serialize()


def build_engine_from_caffe(seed: CaffeSeed) -> bytes:
    from ..builder import Builder
    from ..importers.caffe import parse_caffe

    with tempfile.TemporaryDirectory(prefix="tkfuzz-seed-") as folder:
        deploy, model = Path(folder) / "deploy.prototxt", Path(folder) / "net.caffemodel"
        deploy.write_text(seed.prototxt)
        model.write_bytes(seed.caffemodel)
        return Builder().build(parse_caffe(deploy, model if seed.caffemodel else None)).serialize()


def vocabulary() -> dict[str, tuple[str, ...]]:
    """Names a mutation may swap in: they pass a shallow check and so reach deeper code than random text."""
    from ..ir.dtypes import DataType
    from ..ir.ops import ActivationType, ElementWiseOperation, PoolingType, ReduceOperation, UnaryOperation
    from ..kernels.registry import _KERNELS, _load_builtin_kernels

    for target in ("cpu", "cuda"):
        try:
            _load_builtin_kernels(target)
        except Exception:  # noqa: BLE001 - CUDA kernels may not import on a machine without a GPU
            pass
    tactics = sorted(f"{target}.{kind}.{impl}" for kind, target, impl in _KERNELS)
    enums = [e.value for enum in (ActivationType, ElementWiseOperation, PoolingType, ReduceOperation, UnaryOperation)
             for e in enum if isinstance(e.value, str)]
    return {"tactics": tuple(tactics), "kinds": tuple(sorted({kind for kind, _, _ in _KERNELS})),
            "dtypes": tuple(d.value for d in DataType) + ("float8e4m3", "int4", "complex64", "str"),
            "enums": tuple(sorted(set(enums))), "targets": ("cpu", "cuda", "tpu", "CPU", ""),
            "precisions": ("fp32", "fp16", "bf16", "int8", "int3", "", "fp64")}


def real_seeds(folder: Path) -> tuple[dict[str, bytes], dict[str, CaffeSeed]]:
    """The small .onnx models and prototxt + caffemodel pairs under `folder` (e.g. ../shared/models)."""
    models, nets = {}, {}
    for path in sorted(folder.rglob("*.onnx")):
        if path.stat().st_size <= REAL_SEED_MAX_BYTES:
            models[f"real:{path.relative_to(folder)}"] = path.read_bytes()
    for path in sorted(folder.rglob("*.caffemodel")):
        prototxts = sorted(path.parent.glob("*.prototxt"))
        if len(prototxts) == 1 and path.stat().st_size <= REAL_SEED_MAX_BYTES:
            nets[f"real:{path.relative_to(folder)}"] = CaffeSeed(prototxts[0].read_text(), path.read_bytes())
    return models, nets


def build_bundle(real_folder: Path | None = None) -> SeedBundle:
    """Every seed; the engines are built here, once, from the ONNX and Caffe seeds that build.

    A seed that does not build (a regression, or a real model the importers cannot take yet) stays an ONNX/Caffe
    seed but gets no engine; `SeedBundle.build_errors` says why, and the runner prints it."""
    models, nets = onnx_models(), caffe_nets()
    if real_folder is not None and real_folder.is_dir():
        real_models, real_nets = real_seeds(real_folder)
        models.update(real_models)
        nets.update(real_nets)
    engines, errors = {}, {}
    builds = [(name, build_engine_from_onnx, model) for name, model in models.items()]
    builds += [(f"caffe_{name}", build_engine_from_caffe, seed) for name, seed in nets.items()]
    for name, build, source in builds:
        try:
            engines[name] = build(source)
        except Exception as error:  # noqa: BLE001 - reported with the campaign, and the seed still mutates
            errors[name] = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return SeedBundle(models, nets, engines, vocabulary(), errors)
