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
from .plan import Plan

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
    draft = save_tensors(tensors, metadata=metadata)
    # The data region does not depend on the metadata, so the checksum of the draft's data holds for the
    # final file too.
    metadata["checksum"] = _checksum(plan_json, _split(draft)[1])
    return save_tensors(tensors, metadata=metadata)


def deserialize(blob: bytes, source: str = "engine") -> tuple[Plan, dict[str, torch.Tensor]]:
    header, data = _split(blob, source)
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != MAGIC:
        raise EngineFormatError(f"{source} is a safetensors file but not a tensorkiln engine (no tensorkiln "
                                f"metadata); {_REBUILD}")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise EngineFormatError(f"{source} uses engine format version {version} (tensorkiln "
                                f"{metadata.get('tensorkiln_version', '?')}); this runtime reads version "
                                f"{FORMAT_VERSION}; {_REBUILD}")
    end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
    if len(data) < end:
        raise EngineFormatError(f"{source} is truncated: {len(data)} of {end} bytes of weights present; {_REBUILD} "
                                "or copy the file again")
    plan_json = metadata.get("plan", "")
    if metadata.get("checksum") != _checksum(plan_json, data):
        raise EngineFormatError(f"{source} is corrupted: its checksum does not match its contents; {_REBUILD} "
                                "or copy the file again")
    try:
        plan = Plan.from_json(json.loads(plan_json))
        weights = load_tensors(bytes(blob))
    except Exception as error:  # the checksum matched, so this is a file written by an incompatible writer
        raise EngineFormatError(f"{source} has a plan this runtime cannot read ({error}); {_REBUILD}") from None
    return plan, weights


def _split(blob: bytes, source: str = "engine") -> tuple[dict, bytes]:
    if len(blob) < 8:
        raise EngineFormatError(f"{source} is not a tensorkiln engine: only {len(blob)} bytes; {_REBUILD}")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        if header_len > 100_000_000:
            raise EngineFormatError(f"{source} is not a tensorkiln engine (unrecognized header); {_REBUILD}")
        raise EngineFormatError(f"{source} is truncated: its header alone needs {header_len} bytes; {_REBUILD}")
    try:
        header = json.loads(blob[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EngineFormatError(f"{source} is not a tensorkiln engine (unreadable header); {_REBUILD}") from None
    if not isinstance(header, dict):
        raise EngineFormatError(f"{source} is not a tensorkiln engine (unexpected header); {_REBUILD}")
    return header, blob[8 + header_len:]


def _checksum(plan_json: str, data: bytes) -> str:
    digest = hashlib.sha256(plan_json.encode())
    digest.update(data)
    return digest.hexdigest()
