"""Tensors in and out of the KServe v2 HTTP body: JSON, and the binary tensor data extension.

A binary request is `<JSON header><tensor bytes...>`, the header's length in the Inference-Header-Content-Length
HTTP header and each binary input's length in its `parameters.binary_data_size`. Inputs become numpy arrays that
are views of the request body (no copy); outputs are written as views of the engine's results.
"""
from __future__ import annotations

import json
import math

import numpy as np

from .datatypes import numpy_dtype, wire_bytes
from .errors import InvalidRequest

HEADER_LENGTH = "inference-header-content-length"


def decode_request(body: bytes, header_length: str | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(the JSON request, {input name: array}) from an infer request body."""
    json_end = len(body)
    if header_length is not None:
        try:
            json_end = int(header_length)
        except ValueError:
            raise InvalidRequest(f"{HEADER_LENGTH} {header_length!r} is not a number") from None
        if not 0 <= json_end <= len(body):
            raise InvalidRequest(f"{HEADER_LENGTH} {json_end} lies outside the body of {len(body)} bytes")
    try:
        request = json.loads(body[:json_end])
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"the request is not valid JSON: {error}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidRequest("the request must be a JSON object with an 'inputs' list")
    binary = memoryview(body)[json_end:]
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for entry in request["inputs"]:
        name, shape, dtype = _describe(entry)
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        count = math.prod(shape)
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(binary):
                raise InvalidRequest(f"input {name!r}: binary_data_size {size!r} does not match shape {shape} of "
                                     f"{dtype} ({count * dtype.itemsize} bytes) and the {len(binary) - offset} "
                                     "bytes left in the body")
            inputs[name] = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            inputs[name] = _from_json(name, entry.get("data"), shape, dtype)
    if offset != len(binary):
        raise InvalidRequest(f"the body has {len(binary) - offset} bytes after the last binary input")
    return request, inputs


def _describe(entry) -> tuple[str, list[int], np.dtype]:
    if not isinstance(entry, dict):
        raise InvalidRequest("each input must be an object with name, shape, datatype")
    name, shape, datatype = entry.get("name"), entry.get("shape"), entry.get("datatype")
    if not isinstance(name, str):
        raise InvalidRequest("an input has no 'name'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InvalidRequest(f"input {name!r}: 'shape' must be a list of non-negative integers, not {shape!r}")
    if not isinstance(datatype, str):
        raise InvalidRequest(f"input {name!r} has no 'datatype'")
    return name, shape, numpy_dtype(datatype)


def _from_json(name: str, data, shape: list[int], dtype: np.dtype) -> np.ndarray:
    if data is None:
        raise InvalidRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidRequest(f"input {name!r}: its data are not {dtype} values: {error}") from None
    if array.size != math.prod(shape):
        raise InvalidRequest(f"input {name!r}: {array.size} values for shape {shape}")
    return array.reshape(shape)


def encode_response(model, request: dict, outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is JSON only)."""
    wanted = request.get("outputs")
    binary_default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    if wanted is None:
        wanted = [{"name": t.name} for t in model.outputs]
    if not isinstance(wanted, list):
        raise InvalidRequest("'outputs' must be a list of objects with a name")
    known = {t.name: t for t in model.outputs}
    described, chunks = [], []
    for entry in wanted:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in known:
            raise InvalidRequest(f"model {model.name!r} has no output {name!r}; its outputs are {', '.join(known)}")
        value = np.ascontiguousarray(outputs[name])
        item = {"name": name, "datatype": known[name].datatype, "shape": list(value.shape)}
        if (entry.get("parameters") or {}).get("binary_data", binary_default):
            item["parameters"] = {"binary_data_size": value.nbytes}
            chunks.append(wire_bytes(value))
        else:
            item["data"] = value.ravel().tolist()
        described.append(item)
    header = {"model_name": model.name, "model_version": model.version, "outputs": described}
    if "id" in request:
        header["id"] = request["id"]
    head = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)
