"""Engine file format: a safetensors container (weights as tensors) whose metadata holds the Plan as
JSON, the format version and a checksum. Reading never executes code from the file.

Layout of a safetensors file: 8 bytes little-endian header length, a JSON header (tensor dtypes, shapes,
offsets, and a `__metadata__` map of strings), then the raw tensor data.
"""
from __future__ import annotations

import hashlib
import json
import struct

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..errors import EngineFormatError
from ..ir.dtypes import DataType
from .plan import Plan, TensorSpec
from .validate import read_plan

MAGIC = "tensorkiln-engine"
FORMAT_VERSION = 1
_REBUILD = "rebuild the engine from the model with `kiln build`"


def _version() -> str:
    from .. import __version__

    return __version__


def serialize(plan: Plan, weights: dict[str, torch.Tensor]) -> bytes:
    tensors = {name: t.detach().cpu().contiguous() for name, t in weights.items()}
    plan_json = json.dumps(plan.to_json(), separators=(",", ":"))
    metadata = {"format": MAGIC, "format_version": str(FORMAT_VERSION), "tensorkiln_version": _version(),
                "plan": plan_json}
    return save_sealed(tensors, metadata, lambda data: _checksum(plan_json, data))


_UNSEALED = "0" * 64  # the checksum's place while the file is written: a SHA-256 in hex has as many characters


def save_sealed(tensors: dict[str, torch.Tensor], metadata: dict[str, str], checksum) -> bytes:
    """The safetensors file of `tensors` with `metadata` and metadata["checksum"] = checksum(data region), written
    once: the header holds a placeholder of the checksum's length, replaced in place (the data region does not
    depend on the header, and the header's length does not change)."""
    blob = bytearray(save_tensors(tensors, metadata={**metadata, "checksum": _UNSEALED}))
    (header_len,) = struct.unpack("<Q", blob[:8])
    digest = checksum(memoryview(blob)[8 + header_len:]).encode()
    marker = b'"checksum":"' + _UNSEALED.encode() + b'"'
    at = bytes(blob[8:8 + header_len]).find(marker)
    if at < 0 or len(digest) != len(_UNSEALED):  # another JSON writer's spacing: write the file again
        return save_tensors(tensors, metadata={**metadata, "checksum": digest.decode()})
    start = 8 + at + len(b'"checksum":"')
    blob[start:start + len(digest)] = digest
    return bytes(blob)


def deserialize(blob: bytes, source: str = "engine") -> tuple[Plan, dict[str, torch.Tensor]]:
    """The plan and weights of an engine file. Every part of the file is checked before it is used: the header and
    its metadata here, the plan field by field against its schema and for consistency (plan/validate.py), the weights
    against the plan; any problem is one EngineFormatError line."""
    header, data = _split(blob, source)
    metadata = _metadata(header, source)
    if metadata.get("format") != MAGIC:
        raise EngineFormatError(f"{source} is a safetensors file but not a tensorkiln engine (no tensorkiln "
                                f"metadata); {_REBUILD}")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise EngineFormatError(f"{source} uses engine format version {version} (tensorkiln "
                                f"{metadata.get('tensorkiln_version', '?')}); this runtime reads versions "
                                f"{FORMAT_VERSION} and 2 (engines with optimization profiles); {_REBUILD}")
    entries = _tensor_entries(header, source)
    end = max((offsets[1] for _, _, offsets in entries.values()), default=0)
    if len(data) < end:
        raise EngineFormatError(f"{source} is truncated: {len(data)} of {end} bytes of weights present; {_REBUILD} "
                                "or copy the file again")
    plan_json = metadata.get("plan", "")
    if metadata.get("checksum") != _checksum(plan_json, data):
        raise EngineFormatError(f"{source} is corrupted: its checksum does not match its contents; {_REBUILD} "
                                "or copy the file again")
    try:
        plan_data = json.loads(plan_json)
    except (ValueError, RecursionError):  # RecursionError: deeply nested brackets
        raise EngineFormatError(f"{source} has a plan that is not readable JSON; {_REBUILD}") from None
    plan = read_plan(plan_data, source)  # the checksum proves nothing against an edit: validate every field
    # The checksum covers the plan and the weight bytes, not the header's tensor entries: check those against
    # the plan so that a corrupted name, dtype, shape or offset is reported here, not as a KeyError at run time.
    _check_entries(entries, plan.weights, len(data), source)
    return plan, _load_weights(blob, source)


def _metadata(header: dict, source: str) -> dict[str, str]:
    """The header's `__metadata__`, which safetensors' own reader wants as a map of strings to strings."""
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) and _utf8(k) and _utf8(v)
                                                 for k, v in metadata.items()):
        raise EngineFormatError(f"{source} is not a tensorkiln engine: its safetensors metadata is not a map of "
                                f"strings to strings; {_REBUILD}")
    return metadata


def _utf8(text: str) -> bool:
    """Whether a string read from the header encodes as UTF-8 (json accepts lone surrogates; safetensors does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _load_weights(blob: bytes, source: str) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(bytes(blob))
    except Exception as error:  # safetensors' reader, on whatever the checks above did not foresee
        detail = " ".join(str(error).split())[:200]
        raise EngineFormatError(f"{source} is corrupted: the safetensors reader refuses it ({detail}); {_REBUILD} "
                                "or copy the file again") from None


def _split(blob: bytes, source: str = "engine") -> tuple[dict, bytes]:
    if len(blob) < 8:
        raise EngineFormatError(f"{source} is not a tensorkiln engine: only {len(blob)} bytes; {_REBUILD}")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        if header_len > 100_000_000:
            raise EngineFormatError(f"{source} is not a tensorkiln engine (unrecognized header); {_REBUILD}")
        raise EngineFormatError(f"{source} is truncated: its header alone needs {header_len} bytes; {_REBUILD}")
    try:
        header = json.loads(blob[8:8 + header_len], object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):  # not UTF-8 or not JSON; RecursionError: deeply nested brackets
        raise EngineFormatError(f"{source} is not a tensorkiln engine (unreadable header); {_REBUILD}") from None
    except _DuplicateKey as duplicate:
        raise EngineFormatError(f"{source} is corrupted: its header names {duplicate} twice; {_REBUILD}") from None
    if not isinstance(header, dict):
        raise EngineFormatError(f"{source} is not a tensorkiln engine (unexpected header); {_REBUILD}")
    return header, blob[8 + header_len:]


# safetensors' dtype codes, for the dtypes an engine stores
_SAFETENSORS_DTYPES = {
    DataType.FLOAT: "F32", DataType.HALF: "F16", DataType.BF16: "BF16", DataType.DOUBLE: "F64",
    DataType.INT8: "I8", DataType.UINT8: "U8", DataType.INT16: "I16", DataType.INT32: "I32", DataType.INT64: "I64",
    DataType.BOOL: "BOOL",
}
_ITEMSIZE = {code: dtype.itemsize for dtype, code in _SAFETENSORS_DTYPES.items()}


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    # json.loads would keep the last of two equal keys; a corrupted name can equal another one, so refuse it
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(repr(key))
        result[key] = value
    return result


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entries(header: dict, source: str) -> dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]:
    """The header's tensor entries as name -> (dtype code, shape, (begin, end)), each checked for form."""
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        problem = _entry_problem(info) or ("" if _utf8(name) else "has a name that is not valid UTF-8")
        if problem:
            raise EngineFormatError(f"{source} is corrupted: the header entry of tensor {name!r} {problem}; "
                                    f"{_REBUILD} or copy the file again")
        entries[name] = (info["dtype"], tuple(info["shape"]), tuple(info["data_offsets"]))
    return entries


def _entry_problem(info) -> str:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        keys = sorted(info) if isinstance(info, dict) else type(info).__name__
        return f"has the keys {keys}, not ['data_offsets', 'dtype', 'shape']"
    if not isinstance(info["dtype"], str) or info["dtype"] not in _ITEMSIZE:
        return f"has the dtype {info['dtype']!r}, which no engine stores"
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        return f"has the shape {shape!r}, not a list of sizes"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        return f"has the data offsets {offsets!r}, not [begin, end]"
    count = 1
    for d in shape:
        count *= d
    if offsets[1] - offsets[0] != count * _ITEMSIZE[info["dtype"]]:
        return (f"has the data offsets {offsets}, which do not hold a {info['dtype']} tensor of shape "
                f"{tuple(shape)} ({count * _ITEMSIZE[info['dtype']]} bytes)")
    return ""


def _check_entries(entries: dict, specs: tuple[TensorSpec, ...], data_len: int, source: str) -> None:
    """The header's tensors are exactly the plan's weights, with their dtypes and shapes, tiling the data."""
    def corrupted(what: str) -> EngineFormatError:
        return EngineFormatError(f"{source} is corrupted: {what}; {_REBUILD} or copy the file again")

    expected = {spec.name: spec for spec in specs}
    missing, unknown = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
    if missing or unknown:
        raise corrupted(f"its plan needs the weights {missing} but the file stores {unknown} instead")
    for name, (code, shape, _) in entries.items():
        spec = expected[name]
        if code != _SAFETENSORS_DTYPES.get(spec.dtype) or shape != tuple(spec.shape):
            raise corrupted(f"weight {name!r} is stored as {code} {shape}, but the plan says "
                            f"{spec.dtype.value} {tuple(spec.shape)}")
    position = 0
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if begin != position:
            raise corrupted(f"weight {name!r} starts at byte {begin} of the data, not at {position} where the "
                            "previous one ends")
        position = end
    if position != data_len:
        raise corrupted(f"the weights end at byte {position} of the data, but the data holds {data_len} bytes")


def _checksum(plan_json: str, data: bytes) -> str:
    digest = hashlib.sha256(plan_json.encode())
    digest.update(data)
    return digest.hexdigest()
