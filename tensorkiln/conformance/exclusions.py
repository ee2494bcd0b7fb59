"""Conformance cases left out of the pass rate, each with its reason. A case is excluded by what its model
uses (operator or element type), never by its result."""
from __future__ import annotations

import onnx

_T = onnx.TensorProto
_TYPE_REASONS = {
    _T.STRING: "strings: an inference engine's tensors are numbers",
    _T.UINT16: "uint16/32/64: PyTorch has no arithmetic kernels for these types",
    _T.UINT32: "uint16/32/64: PyTorch has no arithmetic kernels for these types",
    _T.UINT64: "uint16/32/64: PyTorch has no arithmetic kernels for these types",
    _T.COMPLEX64: "complex numbers are not supported",
    _T.COMPLEX128: "complex numbers are not supported",
}
for _name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1", "INT4",
              "UINT4", "INT2", "UINT2"):
    if hasattr(_T, _name):
        _TYPE_REASONS[getattr(_T, _name)] = "8-bit and smaller float/int storage types are not supported yet"

_BFLOAT16_REASON = "bfloat16 test data (numpy has no bfloat16; engines take bfloat16 as torch tensors)"

_OP_REASONS = {
    **{op: "training-only operator" for op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "Gradient",
                                              "Adagrad", "Adam", "Momentum")},
    **{op: "sequences, optionals and maps are not supported (engines pass tensors)" for op in (
        "SequenceConstruct", "SequenceInsert", "SequenceAt", "SequenceEmpty", "SequenceErase", "SequenceLength",
        "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalGetElement",
        "OptionalHasElement")},
    **{op: "string processing is not inference" for op in ("StringNormalizer", "StringSplit", "StringConcat",
                                                            "RegexFullMatch", "TfIdfVectorizer")},
    **{op: "random generators: outputs cannot be compared" for op in ("RandomUniform", "RandomNormal",
                                                                      "RandomUniformLike", "RandomNormalLike",
                                                                      "Bernoulli", "Multinomial")},
    "ImageDecoder": "image decoding is preprocessing, not inference",
}


def _value_types(graph: onnx.GraphProto):
    for value in (*graph.input, *graph.output):
        if value.type.HasField("tensor_type"):
            yield value.type.tensor_type.elem_type
    for initializer in graph.initializer:
        yield initializer.data_type
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in ("to", "dtype", "output_dtype") and attribute.type == onnx.AttributeProto.INT:
                yield attribute.i


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _nodes(attribute.g)


def _has_non_tensor_io(graph: onnx.GraphProto) -> bool:
    return any(value.type.WhichOneof("value") not in ("tensor_type", None) for value in (*graph.input, *graph.output))


def exclusion_reason(name: str, model: onnx.ModelProto) -> str | None:
    if "training" in name:
        return "training mode (dropout masks, batch statistics)"
    if _has_non_tensor_io(model.graph):
        return _OP_REASONS["SequenceAt"]  # a sequence or optional input/output, whatever the operator
    for node in _nodes(model.graph):
        if node.op_type in _OP_REASONS:
            return _OP_REASONS[node.op_type]
        if node.domain not in ("", "ai.onnx"):
            return f"operator of domain {node.domain} (not the default ONNX domain)"
    for elem_type in _value_types(model.graph):
        if elem_type in _TYPE_REASONS:
            return _TYPE_REASONS[elem_type]
    if "bfloat16" in name.lower() or "_bf16" in name.lower() or _T.BFLOAT16 in set(_value_types(model.graph)):
        return _BFLOAT16_REASON
    return None
