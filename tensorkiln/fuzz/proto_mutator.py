"""Generic mutations of a protobuf message (an ONNX ModelProto, a Caffe NetParameter), driven by its descriptor:
any set field anywhere in the tree gets a hostile value of its own type (ints at the edges of their range, NaN
and infinities, other names of the same model, cut or flipped bytes), repeated fields lose, repeat or swap
items, sub-messages are cleared or replaced by another message of the same type from the same tree.
"""
from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .choices import INTERESTING_FLOATS, INTERESTING_INTS, Choices

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_TYPES = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)


def is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def set_fields(message: Message) -> list[tuple[Message, FieldDescriptor]]:
    """Every (message, field) pair with a value, anywhere in the tree under `message`."""
    found = []
    for field, value in message.ListFields():
        found.append((message, field))
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            for item in (value if is_repeated(field) else [value]):
                found.extend(set_fields(item))
    return found


def messages_of_type(message: Message, full_name: str) -> list[Message]:
    found = [message] if message.DESCRIPTOR.full_name == full_name else []
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            for item in (value if is_repeated(field) else [value]):
                found.extend(messages_of_type(item, full_name))
    return found


class ProtoMutator:
    """One generic mutation of a message tree; `names` are strings to swap into string fields."""

    def __init__(self, choices: Choices, names: list[str]):
        self.choices, self.names = choices, names

    def mutate(self, root: Message) -> str:
        fields = set_fields(root)
        if not fields:
            return "nothing to mutate"
        message, field = self.choices.choice(fields)
        where = f"{message.DESCRIPTOR.name}.{field.name}"
        if is_repeated(field):
            return f"{where}: {self._repeated(root, message, field)}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return f"{where}: {self._message(root, message, field)}"
        value = self.scalar(field, getattr(message, field.name))
        setattr(message, field.name, value)
        return f"{where} = {_short(value)}"

    def scalar(self, field: FieldDescriptor, old: Any) -> Any:
        """A hostile value of the field's own type (protobuf refuses values of another type)."""
        kind = field.type
        if kind in _INT_RANGES:
            low, high = _INT_RANGES[kind]
            near = [old + d for d in (-1, 1)] + [-old, old * 1000] if isinstance(old, int) else []
            options = [v for v in (*INTERESTING_INTS, *near) if low <= v <= high]
            return self.choices.choice(options)
        if kind in _FLOAT_TYPES:
            return self.choices.choice(INTERESTING_FLOATS)
        if kind == FieldDescriptor.TYPE_BOOL:
            return not old
        if kind == FieldDescriptor.TYPE_ENUM:
            return self.choices.choice([v.number for v in field.enum_type.values])
        if kind == FieldDescriptor.TYPE_STRING:
            text = self.choices.text(self.names)
            return text.encode("utf-8", "replace").decode("utf-8")  # protobuf refuses lone surrogates
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.bytes_value(old)
        raise AssertionError(f"unhandled field type {kind}")

    def bytes_value(self, old: bytes) -> bytes:
        edit = self.choices.choice(("cut", "extend", "flip", "empty", "random"))
        if edit == "cut":
            return old[:self.choices.integer(0, max(len(old) - 1, 0))]
        if edit == "extend":
            return old + self.choices.blob(16)
        if edit == "flip" and old:
            data = bytearray(old)
            data[self.choices.integer(0, len(data) - 1)] ^= 1 << self.choices.integer(0, 7)
            return bytes(data)
        return b"" if edit == "empty" else self.choices.blob(64)

    def _repeated(self, root: Message, message: Message, field: FieldDescriptor) -> str:
        items = getattr(message, field.name)
        edit = self.choices.choice(("drop", "duplicate", "swap", "clear", "set", "append"))
        if field.type == FieldDescriptor.TYPE_MESSAGE and edit in ("set", "append"):
            edit = "duplicate"
        if edit == "clear" or not items:
            message.ClearField(field.name)
            return "cleared"
        i = self.choices.integer(0, len(items) - 1)
        if edit == "drop":
            del items[i]
        elif edit == "duplicate":
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                items.add().CopyFrom(items[i])
            else:
                items.append(items[i])
        elif edit == "swap" and field.type != FieldDescriptor.TYPE_MESSAGE:
            j = self.choices.integer(0, len(items) - 1)
            items[i], items[j] = items[j], items[i]
        elif edit == "swap":  # messages: move item i to the end
            copy = type(items[i])()
            copy.CopyFrom(items[i])
            del items[i]
            items.add().CopyFrom(copy)
        elif edit == "set":
            items[i] = self.scalar(field, items[i])
        else:
            items.append(self.scalar(field, items[i]))
        return f"{edit} [{i}]"

    def _message(self, root: Message, message: Message, field: FieldDescriptor) -> str:
        if self.choices.boolean():
            message.ClearField(field.name)
            return "cleared"
        others = messages_of_type(root, field.message_type.full_name)
        source = self.choices.choice(others)
        if source is getattr(message, field.name):
            return "kept"
        copy = type(source)()
        copy.CopyFrom(source)
        getattr(message, field.name).CopyFrom(copy)
        return "replaced by another of its type"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
