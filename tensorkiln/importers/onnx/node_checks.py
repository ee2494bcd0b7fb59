"""A node checked against its operator's ONNX schema before its converter sees it.

Converters are written for well-formed nodes: they read `kernel_shape` as a list of ints and take input 1 of a Conv
as a tensor. A model file is data, so a node whose required input is missing or empty, whose attribute has another
type than the spec's (a TENSOR where INTS belong), or that lacks a required attribute is refused here, in one line
naming the node, the input or attribute and what the spec wants, instead of failing inside the converter with a
TypeError or AttributeError. Nodes of operators onnx has no schema for (custom domains, plugins) are left to their
converter.
"""
from __future__ import annotations

from typing import Callable

import onnx
from onnx.defs import OpSchema

_SINGLE = OpSchema.FormalParameterOption.Single
_VARIADIC = OpSchema.FormalParameterOption.Variadic


def schema_for(node: onnx.NodeProto, opset: int, domain_versions: dict[str, int]) -> OpSchema | None:
    """The schema of the node's operator at the version the model imports (None where onnx has none)."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    version = opset if domain == "" else domain_versions.get(domain)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain)
    except (onnx.defs.SchemaError, TypeError):  # TypeError: an op_type that is not text (bytes of a damaged file)
        return None


def node_problem(node: onnx.NodeProto, schema: OpSchema) -> str | None:
    """What is wrong with `node` by its schema (one phrase), or None."""
    inputs, formal = list(node.input), list(schema.inputs)
    if len(inputs) > schema.max_input:
        return f"has {len(inputs)} inputs; {node.op_type} takes at most {schema.max_input}"
    if len(inputs) < schema.min_input:
        return f"has {len(inputs)} input(s); {node.op_type} needs at least {schema.min_input}"
    for index, name in enumerate(inputs):
        if not name and index < len(formal) and formal[index].option == _SINGLE:
            return f"input {index} ({formal[index].name}) is empty, but {node.op_type} requires it"
    if len(node.output) > schema.max_output:
        return f"has {len(node.output)} outputs; {node.op_type} has at most {schema.max_output}"
    for attribute in node.attribute:
        expected = schema.attributes.get(attribute.name)
        if expected is not None and attribute.type != expected.type:
            got = onnx.AttributeProto.AttributeType.Name(attribute.type) if attribute.type in \
                onnx.AttributeProto.AttributeType.values() else str(attribute.type)
            return (f"attribute {attribute.name!r} is of type {got}; the ONNX spec of {node.op_type} makes it "
                    f"{expected.type.name}")
    present = {attribute.name for attribute in node.attribute}
    for name, attribute in schema.attributes.items():
        if attribute.required and name not in present:
            return f"has no {name!r} attribute, which {node.op_type} requires"
    return None


def type_problem(node: onnx.NodeProto, schema: OpSchema, dtype_of: Callable[[str], object]) -> str | None:
    """Inputs that the schema gives one type variable (MatMul's A and B are both T) must have one dtype: an
    initializer whose data_type was edited would otherwise build a float x int32 MatMul that fails at run time.
    `dtype_of` gives a value's dtype (None where unknown)."""
    formal = list(schema.inputs)
    if not formal:
        return None
    members: dict[str, list[tuple[int, str, object]]] = {}
    for index, name in enumerate(node.input):
        parameter = formal[min(index, len(formal) - 1)]
        if not name or (index >= len(formal) and parameter.option != _VARIADIC):
            continue
        if parameter.option == _VARIADIC and not parameter.is_homogeneous:
            continue
        dtype = dtype_of(name)
        if dtype is not None:
            members.setdefault(parameter.type_str, []).append((index, name, dtype))
    for type_str, inputs in members.items():
        if len({dtype for _, _, dtype in inputs}) > 1:
            listing = ", ".join(f"input {index} {name!r} is {getattr(dtype, 'name', dtype)}"
                                for index, name, dtype in inputs)
            return (f"inputs of one type ({type_str} in the ONNX spec of {node.op_type}) disagree: {listing}; "
                    "the model is malformed (an initializer of the wrong data_type?)")
    return None
