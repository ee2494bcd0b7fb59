"""grpc_wire: ModelInfer's messages read and written with their tensor bytes kept out of protobuf, checked against
protobuf's own parsing and serialization of the same messages (tritonclient's generated classes)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient, grpcio) is not installed")

from tritonclient.grpc import service_pb2 as pb  # noqa: E402

from tensorkiln.serve.errors import InvalidRequest  # noqa: E402
from tensorkiln.serve.grpc_wire import InferAnswer, InferCodec  # noqa: E402

CODEC = InferCodec(pb)
RAW_SIZES = (0, 5, 127, 128, 70_000)  # a varint length of one, two and three bytes; an empty tensor


def _request(raw: list[bytes]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", model_version="3", id="r-17")
    request.parameters["priority"].int64_param = 2
    for index, data in enumerate(raw):
        request.inputs.add(name=f"x{index}", datatype="UINT8", shape=[len(data)])
    request.outputs.add(name="y")
    request.raw_input_contents.extend(raw)
    return request


def _raw_inputs(seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in RAW_SIZES]


def test_request_reads_as_protobuf_parses_it_with_raw_inputs_as_views_of_the_received_bytes():
    raw = _raw_inputs()
    data = _request(raw).SerializeToString()
    call = CODEC.read_request(data)
    expected = pb.ModelInferRequest.FromString(data)
    assert [bytes(view) for view in call.raw] == list(expected.raw_input_contents) == raw
    expected.ClearField("raw_input_contents")
    assert call.message == expected
    array = np.frombuffer(call.raw[-1], dtype=np.uint8)
    assert array.base.obj is data  # no copy: the array reads the received bytes


def test_fields_in_any_order_are_read_as_protobuf_reads_them():
    raw = _raw_inputs(1)
    without = _request(raw)
    without.ClearField("raw_input_contents")
    contents = pb.ModelInferRequest(raw_input_contents=raw).SerializeToString()
    data = contents + without.SerializeToString()  # the raw contents before every other field
    call = CODEC.read_request(data)
    assert [bytes(view) for view in call.raw] == raw
    assert call.message == without
    assert CODEC.read_request(without.SerializeToString()).raw == []  # no raw contents: protobuf parses it whole


@pytest.mark.parametrize("data, says", [
    (b"\x3a\x05abc", "truncated: field 7 needs 5 bytes"),  # a raw input longer than the message
    (b"\x0a", "truncated in a varint"),  # model_name's length missing
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x0b\x0c", "wire type 3"),  # a group
    (b"\x09\x00\x00", "fixed-size field"),
])
def test_malformed_requests_are_refused_with_a_reason(data, says):
    with pytest.raises(InvalidRequest, match=says):
        CODEC.read_request(data)


def test_no_mutation_of_a_request_ends_in_anything_but_a_parse_or_an_invalid_request():
    data = _request(_raw_inputs(2)[:4]).SerializeToString()
    rng = np.random.default_rng(3)
    outcomes = set()
    for trial in range(600):
        mutated = bytearray(data[:rng.integers(0, len(data) + 1)] if trial % 2 else data)
        for _ in range(rng.integers(1, 4)):
            if mutated:
                mutated[rng.integers(0, len(mutated))] = rng.integers(0, 256)
        try:
            CODEC.read_request(bytes(mutated))
            outcomes.add("parsed")
        except InvalidRequest:
            outcomes.add("refused")
    assert outcomes == {"parsed", "refused"}  # both happen: the mutations reach the checks


def test_response_writes_what_protobuf_reads_back_with_raw_outputs_appended():
    response = pb.ModelInferResponse(model_name="m", model_version="1", id="r-17")
    outputs = [np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1:3],  # not contiguous: written as its values
               np.zeros((0, 2), np.int64), np.arange(40_000, dtype=np.uint8)]
    for index, value in enumerate(outputs):
        response.outputs.add(name=f"y{index}", datatype="FP32", shape=value.shape)
    data = CODEC.write_response(InferAnswer(response, outputs))
    parsed = pb.ModelInferResponse.FromString(data)
    assert list(parsed.raw_output_contents) == [value.tobytes() for value in outputs]
    parsed.ClearField("raw_output_contents")
    assert parsed == response
