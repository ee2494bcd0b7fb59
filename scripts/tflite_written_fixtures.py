"""TFLite fixtures written operator by operator (for make_tflite_fixtures.py): the ops TensorFlow's converter does not
emit from TF ops. Each is packed with the object API of TensorFlow's own schema and run by tf.lite.Interpreter, whose
outputs are the reference."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tflite_fixture_common import OUT, RNG, op_names

# ---------------------------------------------------------------------------------------------------------------
# Written directly: ops TensorFlow's converter does not emit from TF ops (it folds them into constants or
# RESHAPE, or fuses a different op). Each is a one-subgraph model packed with the object API of TensorFlow's own
# schema, with a "serving_default" signature; tf.lite.Interpreter runs it and gives the reference, as above.

def schema():
    from tensorflow.lite.python import schema_py_generated as schema_fb
    return schema_fb


TENSOR_TYPES = {np.dtype(np.float32): "FLOAT32", np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL",
                np.dtype(np.int64): "INT64"}


class GraphWriter:
    """A TFLite model built operator by operator: inputs, constants, builtin ops and named outputs."""

    def __init__(self):
        s = schema()
        self.s, self.tensors, self.buffers, self.operators, self.codes = s, [], [s.BufferT()], [], []
        self.inputs, self.outputs, self.feeds = [], [], {}

    def tensor(self, name: str, shape, dtype, data: np.ndarray | None = None) -> int:
        t = self.s.TensorT()
        t.name, t.shape, t.type = name, [int(d) for d in shape], getattr(self.s.TensorType,
                                                                          TENSOR_TYPES[np.dtype(dtype)])
        t.buffer = 0
        if data is not None:
            buffer = self.s.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, name: str, value: np.ndarray) -> int:
        index = self.tensor(name, value.shape, value.dtype)
        self.inputs.append((name, index))
        self.feeds[name] = value
        return index

    def const(self, name: str, value) -> int:
        value = np.asarray(value)
        return self.tensor(name, value.shape, value.dtype, value)

    def op(self, op_name: str, inputs: list[int], outputs: list[tuple], options=None) -> list[int]:
        """outputs: (shape, dtype) of each output tensor; options: an <Name>OptionsT object (or None)."""
        code = getattr(self.s.BuiltinOperator, op_name)
        if code not in [c.builtinCode for c in self.codes]:
            opcode = self.s.OperatorCodeT()
            opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), 1
            self.codes.append(opcode)
        operator = self.s.OperatorT()
        operator.opcodeIndex = [c.builtinCode for c in self.codes].index(code)
        operator.inputs = inputs
        operator.outputs = [self.tensor(f"{op_name.lower()}_{len(self.operators)}_{i}", shape, dtype)
                            for i, (shape, dtype) in enumerate(outputs)]
        if options is not None:
            operator.builtinOptionsType = getattr(self.s.BuiltinOptions, type(options).__name__[:-1])
            operator.builtinOptions = options
        self.operators.append(operator)
        return operator.outputs

    def output(self, name: str, index: int) -> None:
        self.outputs.append((name, index))

    def options(self, kind: str, **fields):
        value = getattr(self.s, f"{kind}OptionsT")()
        for key, field in fields.items():
            setattr(value, key, field)
        return value

    def pack(self) -> bytes:
        import flatbuffers

        s = self.s
        graph = s.SubGraphT()
        graph.tensors, graph.operators, graph.name = self.tensors, self.operators, "main"
        graph.inputs, graph.outputs = [i for _, i in self.inputs], [i for _, i in self.outputs]
        signature = s.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = "serving_default", 0
        signature.inputs, signature.outputs = ([self._map(n, i) for n, i in pairs]
                                               for pairs in (self.inputs, self.outputs))
        model = s.ModelT()
        model.version, model.description, model.subgraphs = 3, "tensorkiln test fixture (written directly)", [graph]
        model.operatorCodes, model.buffers, model.signatureDefs = self.codes, self.buffers, [signature]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def _map(self, name: str, index: int):
        tensor_map = self.s.TensorMapT()
        tensor_map.name, tensor_map.tensorIndex = name, index
        return tensor_map


# name -> (writer function, target ops); the writer fills a GraphWriter
WRITTEN: dict[str, tuple] = {}


def written(name, targets):
    def register(fn):
        WRITTEN[name] = (fn, targets)
        return fn
    return register


def normal(*shape, positive=False):
    value = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(value) + 0.2 if positive else value


@written("prelu_written", ["PRELU"])
def _(g):
    x = g.input("x", normal(1, 4, 5, 3))
    channel = g.op("PRELU", [x, g.const("alpha", np.float32([0.1, -0.2, 0.3]))], [((1, 4, 5, 3), np.float32)])[0]
    shared = g.op("PRELU", [x, g.const("alpha_hw", normal(1, 5, 1) * 0.5)], [((1, 4, 5, 3), np.float32)])[0]
    g.output("channel", channel)
    g.output("shared", shared)


@written("relu_0_to_1_written", ["RELU_0_TO_1"])
def _(g):
    x = g.input("x", normal(2, 9) * 1.5)
    g.output("y", g.op("RELU_0_TO_1", [x], [((2, 9), np.float32)])[0])


@written("squeeze_expand_dims", ["SQUEEZE", "EXPAND_DIMS"])
def _(g):
    x = g.input("x", normal(2, 1, 3, 1))
    g.output("squeeze_some", g.op("SQUEEZE", [x], [((2, 3, 1), np.float32)],
                                  g.options("Squeeze", squeezeDims=[1]))[0])
    g.output("squeeze_all", g.op("SQUEEZE", [x], [((2, 3), np.float32)], g.options("Squeeze"))[0])
    g.output("expand_last", g.op("EXPAND_DIMS", [x, g.const("axis", np.int32([-1]))],
                                 [((2, 1, 3, 1, 1), np.float32)], g.options("ExpandDims"))[0])
    g.output("expand_first", g.op("EXPAND_DIMS", [x, g.const("axis0", np.int32(0))],
                                  [((1, 2, 1, 3, 1), np.float32)], g.options("ExpandDims"))[0])


@written("fill_range", ["FILL", "RANGE", "ADD"])
def _(g):
    value = g.input("value", normal(1))
    x = g.input("x", normal(2, 5))
    scalar = g.op("SQUEEZE", [value], [((), np.float32)], g.options("Squeeze"))[0]
    g.output("fill_input", g.op("FILL", [g.const("dims", np.int32([2, 3])), scalar], [((2, 3), np.float32)],
                                g.options("Fill"))[0])
    g.output("fill_const", g.op("FILL", [g.const("dims3", np.int32([3, 1, 2])), g.const("v", np.int32(7))],
                                [((3, 1, 2), np.int32)], g.options("Fill"))[0])
    ramp = g.op("RANGE", [g.const(n, np.float32(v)) for n, v in (("start", 0.5), ("limit", 3.0), ("delta", 0.5))],
                [((5,), np.float32)], g.options("Range"))[0]
    g.output("x_plus_range", g.op("ADD", [x, ramp], [((2, 5), np.float32)], g.options("Add"))[0])
    g.output("range_down", g.op("RANGE", [g.const(n, np.int32(v)) for n, v in
                                          (("start_i", 9), ("limit_i", -2), ("delta_i", -3))],
                                [((4,), np.int32)], g.options("Range"))[0])


@written("shape_rank_zeros_like", ["SHAPE", "RANK", "ZEROS_LIKE"])
def _(g):
    x = g.input("x", normal(2, 3, 4))
    i = g.input("i", RNG.integers(-5, 5, (3, 2)).astype(np.int32))
    g.output("shape", g.op("SHAPE", [x], [((3,), np.int32)], g.options("Shape", outType=schema().TensorType.INT32))[0])
    g.output("rank", g.op("RANK", [i], [((), np.int32)], g.options("Rank"))[0])
    g.output("zeros", g.op("ZEROS_LIKE", [x], [((2, 3, 4), np.float32)], g.options("ZerosLike"))[0])
    g.output("zeros_int", g.op("ZEROS_LIKE", [i], [((3, 2), np.int32)], g.options("ZerosLike"))[0])


@written("l2_pool", ["L2_POOL_2D"])
def _(g):
    x = g.input("x", normal(1, 7, 8, 3))
    p = schema().Padding
    g.output("same", g.op("L2_POOL_2D", [x], [((1, 4, 4, 3), np.float32)], g.options(
        "Pool2D", padding=p.SAME, strideH=2, strideW=2, filterHeight=3, filterWidth=3))[0])
    g.output("valid", g.op("L2_POOL_2D", [x], [((1, 6, 4, 3), np.float32)], g.options(
        "Pool2D", padding=p.VALID, strideH=1, strideW=2, filterHeight=2, filterWidth=2))[0])


@written("fake_quant", ["FAKE_QUANT"])
def _(g):
    x = g.input("x", normal(3, 11) * 2.0)
    g.output("wide", g.op("FAKE_QUANT", [x], [((3, 11), np.float32)], g.options(
        "FakeQuant", min=-1.7, max=2.3, numBits=8, narrowRange=False))[0])
    # TFLite's kernel refuses narrow_range ("only meant to be applied to weights"): 4 bits instead
    g.output("four_bits", g.op("FAKE_QUANT", [x], [((3, 11), np.float32)], g.options(
        "FakeQuant", min=-0.6, max=3.1, numBits=4, narrowRange=False))[0])


@written("bitwise_xor_right_shift", ["BITWISE_XOR", "RIGHT_SHIFT"])
def _(g):
    a = g.input("a", RNG.integers(-1000, 1000, (3, 4)).astype(np.int32))
    b = g.input("b", RNG.integers(-1000, 1000, (3, 4)).astype(np.int32))
    shift = g.input("shift", RNG.integers(0, 12, (1, 4)).astype(np.int32))
    g.output("xor", g.op("BITWISE_XOR", [a, b], [((3, 4), np.int32)], g.options("BitwiseXor"))[0])
    g.output("shifted", g.op("RIGHT_SHIFT", [a, shift], [((3, 4), np.int32)], g.options("RightShift"))[0])


@written("reduce_all", ["REDUCE_ALL"])
def _(g):
    x = g.input("x", RNG.standard_normal((3, 4, 2)) > -0.8)
    g.output("rows", g.op("REDUCE_ALL", [x, g.const("axes", np.int32([1]))], [((3, 2), np.bool_)],
                          g.options("Reducer", keepDims=False))[0])
    g.output("kept", g.op("REDUCE_ALL", [x, g.const("axes2", np.int32([0, 2]))], [((1, 4, 1), np.bool_)],
                          g.options("Reducer", keepDims=True))[0])


@written("embedding_lookup", ["EMBEDDING_LOOKUP"])
def _(g):
    ids = g.input("ids", RNG.integers(0, 6, (5,)).astype(np.int32))
    g.output("y", g.op("EMBEDDING_LOOKUP", [ids, g.const("table", normal(6, 4))], [((5, 4), np.float32)])[0])


def write_direct(name: str, fn, targets: list[str]) -> str:
    g = GraphWriter()
    fn(g)
    model = g.pack()
    ops = op_names(model)
    absent = [t for t in targets if t not in ops]
    if absent:
        return f"{name}: {absent} not in {sorted(ops)}"
    try:
        outputs = tf.lite.Interpreter(model_content=model).get_signature_runner()(**g.feeds)
    except Exception as error:  # noqa: BLE001  (reported with the others)
        return f"{name}: tf.lite.Interpreter failed: {type(error).__name__}: {str(error)[:300]}"
    (OUT / f"{name}.tflite").write_bytes(model)
    arrays = {f"input:{k}": v for k, v in g.feeds.items()} | {f"output:{k}": v for k, v in outputs.items()}
    np.savez(OUT / f"{name}.npz", target=np.array(targets), tensorflow=np.array(tf.__version__), **arrays)
    print(f"{name}: {sorted(ops)} {len(model)} bytes (written directly)")
    return ""
