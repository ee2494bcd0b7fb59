"""ModelInfer's messages on the wire with their tensor bytes kept out of protobuf.

Parsed by protobuf, a request's raw_input_contents are copied into the message and copied again at each read; a
response's raw_output_contents are copied by `tobytes`, by the append and by the serialization. Here the request's
top-level fields are scanned (protobuf's wire format: a key varint, then a varint, 8 bytes, a length-delimited run or
4 bytes): each raw_input_contents entry becomes a memoryview of the received bytes (numpy arrays over it: no copy),
the other fields are parsed by protobuf; a response is serialized without its raw outputs, which are appended as
length-delimited fields, written once, straight from the output arrays. Messages are hostile input: a truncated or
malformed one is an InvalidRequest, never an IndexError.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .datatypes import wire_bytes
from .errors import InvalidRequest

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


@dataclasses.dataclass
class InferCall:
    message: object  # ModelInferRequest without its raw_input_contents
    raw: list[memoryview]  # raw_input_contents, in order: views of the received bytes


@dataclasses.dataclass
class InferAnswer:
    message: object  # ModelInferResponse without its raw_output_contents
    raw: list[np.ndarray]  # raw_output_contents, in order


class InferCodec:
    """ModelInferRequest bytes -> InferCall, InferAnswer -> ModelInferResponse bytes, for the generated module `pb`."""

    def __init__(self, pb):
        self.request_type = pb.ModelInferRequest
        self.raw_input_field = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
        raw_output_field = pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number
        self.raw_output_key = _varint_bytes(raw_output_field << 3 | LENGTH_DELIMITED)

    def read_request(self, data: bytes) -> InferCall:
        from google.protobuf.message import DecodeError

        view = memoryview(data)
        raw, kept, pos = [], [], 0
        while pos < len(view):
            start = pos
            key, pos = _read_varint(view, pos)
            field, wire_type = key >> 3, key & 7
            if wire_type == LENGTH_DELIMITED:
                size, pos = _read_varint(view, pos)
                if pos + size > len(view):
                    raise InvalidRequest(f"the ModelInfer request is truncated: field {field} needs {size} bytes, "
                                         f"{len(view) - pos} remain")
                if field == self.raw_input_field:
                    raw.append(view[pos:pos + size])
                    pos += size
                    continue
                pos += size
            elif wire_type == VARINT:
                _, pos = _read_varint(view, pos)
            elif wire_type in (FIXED64, FIXED32):
                pos += 8 if wire_type == FIXED64 else 4
                if pos > len(view):
                    raise InvalidRequest("the ModelInfer request is truncated in a fixed-size field")
            else:
                raise InvalidRequest(f"the ModelInfer request has field {field} of wire type {wire_type}, which its "
                                     "schema never uses; send a ModelInferRequest")
            kept.append(view[start:pos])
        try:
            message = self.request_type.FromString(data if not raw else b"".join(kept))
        except DecodeError as error:
            raise InvalidRequest(f"the ModelInfer request is not a valid ModelInferRequest: {error}") from None
        return InferCall(message, raw)

    def write_response(self, answer: InferAnswer) -> bytes:
        parts = [answer.message.SerializeToString()]
        for value in answer.raw:
            data = wire_bytes(value)
            parts += [self.raw_output_key, _varint_bytes(len(data)), data]
        return b"".join(parts)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 64:
        if pos >= len(view):
            raise InvalidRequest("the ModelInfer request is truncated in a varint")
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise InvalidRequest("the ModelInfer request has a varint longer than 10 bytes")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
