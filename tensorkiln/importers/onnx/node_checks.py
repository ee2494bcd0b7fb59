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


def opset_problem(node: onnx.NodeProto, opset: int) -> str | None:
    """A default-domain operator the model's opset does not define yet (BitwiseNot in an opset-17 model)."""
    if node.domain not in ("", "ai.onnx") or not isinstance(node.op_type, str):
        return None
    try:
        first = onnx.defs.get_schema(node.op_type, "").since_version  # the newest version; walk down to the first
    except onnx.defs.SchemaError:
        return None  # not an ONNX operator at any opset: left to the unsupported-operator report
    while first > 1:
        try:
            first = onnx.defs.get_schema(node.op_type, first - 1, "").since_version
        except onnx.defs.SchemaError:
            break
    if first > opset:
        return f"{node.op_type} is not an operator of ONNX opset {opset} (it first appears in opset {first})"
    return None


def _later_attributes(op_type: str, schema: OpSchema) -> set[str]:
    """Attributes a later version of the operator defines than `schema` does."""
    try:
        newest = onnx.defs.get_schema(op_type, schema.domain)
    except onnx.defs.SchemaError:
        return set()
    return set(newest.attributes) - set(schema.attributes)


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
        # a variadic input (Min's, Concat's) has no "absent" form: every name it lists is an operand
        if not name and formal and index >= len(formal) - 1 and formal[-1].option == _VARIADIC:
            return f"input {index} ({formal[-1].name}) is empty; each input of {node.op_type}'s list must be named"
    if len(node.output) > schema.max_output:
        return f"has {len(node.output)} outputs; {node.op_type} has at most {schema.max_output}"
    for attribute in node.attribute:
        expected = schema.attributes.get(attribute.name)
        if expected is None and attribute.name in _later_attributes(node.op_type, schema):
            # converters read it by its newer spec (MaxPool's dilations, opset 10) with no type check; ONNX's
            # checker and onnxruntime refuse an attribute the model's opset does not define
            return (f"has attribute {attribute.name!r}, which {node.op_type} does not have at the model's opset "
                    f"(its version since opset {schema.since_version}; a later one added it): raise the model's "
                    "opset or remove the attribute")
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


# ONNX element type names of tensorkiln's dtypes, as the schemas' type constraints spell them
_TYPE_STRINGS = {"FLOAT": "tensor(float)", "HALF": "tensor(float16)", "BF16": "tensor(bfloat16)",
                 "DOUBLE": "tensor(double)", "INT8": "tensor(int8)", "UINT8": "tensor(uint8)", "INT16": "tensor(int16)",
                 "INT32": "tensor(int32)", "INT64": "tensor(int64)", "BOOL": "tensor(bool)"}


def _family(type_string: str) -> str:
    """floating, integer or boolean: the kind of element a type constraint asks for."""
    if type_string in ("tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"):
        return "floating"
    return "integer" if "int" in type_string else type_string


def allowed_type_problem(node: onnx.NodeProto, schema: OpSchema, dtype_of: Callable[[str], object],
                         held_as_float: Callable[[str], bool]) -> str | None:
    """Each input's dtype must be one its type constraint allows (BitwiseNot takes integers, not float32).
    Values held as float32 for another type (FP8, `held_as_float`) are exempt."""
    formal = list(schema.inputs)
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    for index, name in enumerate(node.input):
        if not name or not formal or (index >= len(formal) and formal[-1].option != _VARIADIC):
            continue
        parameter = formal[min(index, len(formal) - 1)]
        dtype = dtype_of(name)
        permitted = allowed.get(parameter.type_str, {parameter.type_str})
        type_string = _TYPE_STRINGS.get(getattr(dtype, "name", ""))
        if dtype is None or type_string is None or held_as_float(name) or not permitted:
            continue
        if not any(t.startswith("tensor(") for t in permitted) or _family(type_string) in map(_family, permitted):
            continue  # (sequences, optionals: not element types; tensorkiln runs more float types than the spec)
        return (f"input {index} {name!r} is {type_string}, which the ONNX spec of {node.op_type} does not allow "
                f"for {parameter.name} (it takes {sorted(permitted)})")  # (the kind of element is wrong)
    return None


# where an axis attribute may point beyond input 0's last dimension: Flatten's axis may be r, OneHot's output and
# Unsqueeze's output have more dimensions than its input
_AXIS_SLACK = {"Flatten": 1, "OneHot": 1}
_SKIP_AXIS = {"Unsqueeze", "ConcatFromSequence", "SplitToSequence", "SequenceAt"}


def axis_problem(node: onnx.NodeProto, rank: int) -> str | None:
    """`axis` / `axes` attributes must lie in [-r, r) for input 0's rank r (as onnxruntime requires); for
    default-domain operators only (a contrib op's input 0 may be a scale, not the data)."""
    if node.op_type in _SKIP_AXIS or node.domain not in ("", "ai.onnx"):
        return None
    slack = _AXIS_SLACK.get(node.op_type, 0)
    for attribute in node.attribute:
        if attribute.name == "axis" and attribute.type == onnx.AttributeProto.INT:
            values = [attribute.i]
        elif attribute.name == "axes" and attribute.type == onnx.AttributeProto.INTS:
            values = list(attribute.ints)
        else:
            continue
        low, high = -rank - slack, rank + slack
        if any(not low <= v < high for v in values):
            return (f"attribute {attribute.name} = {values[0] if attribute.name == 'axis' else values} is out of "
                    f"range for input 0 of rank {rank} (valid: {low} to {high - 1})")
    return None
