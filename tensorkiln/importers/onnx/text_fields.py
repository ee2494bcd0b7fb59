"""Every text field of a model (names, op types, domains, attribute strings) checked to be text.

protobuf hands a string field whose bytes are not valid UTF-8 (a damaged file) back as `bytes`; such a name would
travel into the network and fail much later (a tensor name the engine file cannot hold as JSON). A damaged name is
refused at load time with one line saying where it is.
"""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

import onnx

from ...errors import ModelFormatError
from ..names import name_problem

# fields that hold the bulk of a model's bytes and no text: not walked (raw_data is bytes by design)
_SKIPPED = {"raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"}
_NAME_FIELDS = {"name", "input", "output", "dim_param"}  # the names of graphs, nodes, values and tensors (not doc strings)
_TENSOR_TEXT = [onnx.TensorProto.DESCRIPTOR.fields_by_name[name] for name in ("name", "doc_string", "external_data")]


def check_text_fields(message: Message, what: str) -> None:
    """Raise ModelFormatError naming the first text field of `message` (or a message inside it) that is not text."""
    stack: list[tuple[Message, str]] = [(message, message.DESCRIPTOR.name)]
    while stack:
        current, path = stack.pop()
        # a tensor's few text fields are read one by one: ListFields would copy its raw_data (most of the model)
        fields = ([(f, getattr(current, f.name)) for f in _TENSOR_TEXT if f.is_repeated or current.HasField(f.name)]
                  if isinstance(current, onnx.TensorProto) else current.ListFields())
        for field, value in fields:
            if field.name in _SKIPPED:
                continue
            repeated = field.is_repeated
            if field.type == FieldDescriptor.TYPE_STRING:
                for item in (value if repeated else [value]):
                    if not isinstance(item, str):
                        raise ModelFormatError(f"{what} is damaged: field {path}.{field.name} holds "
                                               f"{bytes(item)[:40]!r}, which is not UTF-8 text; re-export or "
                                               "re-download the model")
                    problem = name_problem(item, allow_empty=True) if field.name in _NAME_FIELDS else None
                    if problem:  # (an empty name is an omitted optional input or output, or an unnamed node)
                        raise ModelFormatError(f"{what}: the name {item[:80]!r} in field {path}.{field.name} "
                                               f"{problem}; an engine cannot hold it: rename it in the model")
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                items = value if repeated else [value]
                stack.extend((item, f"{path}.{field.name}") for item in items)
