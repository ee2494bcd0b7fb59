"""A fuzz case (what to run) and its outcome (what happened), and the case file format.

A case file is self-contained, so a finding replays anywhere (`python -m tensorkiln.fuzz --replay FILE`):

    TKFUZZ1\\n
    {"target": "engine", "parts": [1234], "info": {...}}\\n     one line of JSON
    <part 0 bytes><part 1 bytes>...                            the payload, lengths as listed in "parts"
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import traceback
from typing import Any

MAGIC = b"TKFUZZ1\n"

# outcome kinds
OK = "ok"  # ran to the end
CLEAN = "clean"  # what `kiln` turns into one line and exit 2: a TensorkilnError, or an OSError naming a file
SKIPPED = "skipped"  # the harness declined to run it (inputs the engine declares too large to allocate)
TRACEBACK = "traceback"  # any other exception
MISMATCH = "mismatch"  # ran, but the outputs disagree with the engine's own declared outputs
CRASH = "crash"  # the worker process died
HANG = "hang"  # the worker went past the time limit
FINDINGS = (TRACEBACK, MISMATCH, CRASH, HANG)
KINDS = (OK, CLEAN, SKIPPED, *FINDINGS)


class HarnessSkip(Exception):
    """The harness declined to run the case (its inputs would be too large to allocate)."""


class OutputMismatch(Exception):
    """The engine ran but its outputs disagree with its declared ones, or a fresh engine does not reload.
    `check` names which check failed (names, dtype, shape, reload): with the seed it tells two findings apart."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


@dataclasses.dataclass(frozen=True)
class Case:
    target: str
    parts: tuple[bytes, ...]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # seed name, mutations applied, input seed

    def encode(self) -> bytes:
        header = {"target": self.target, "parts": [len(p) for p in self.parts], "info": self.info}
        return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(self.parts)

    @classmethod
    def decode(cls, blob: bytes) -> "Case":
        if not blob.startswith(MAGIC):
            raise ValueError("not a tensorkiln fuzz case file (it does not start with TKFUZZ1)")
        line_end = blob.index(b"\n", len(MAGIC))
        header = json.loads(blob[len(MAGIC):line_end])
        parts, position = [], line_end + 1
        for length in header["parts"]:
            parts.append(blob[position:position + length])
            position += length
        return cls(header["target"], tuple(parts), header.get("info", {}))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str
    error_type: str = ""  # the exception's class name
    where: str = ""  # "file:line" of the innermost tensorkiln frame (else the innermost frame)
    message: str = ""  # first line of the exception message (or what was wrong, for a mismatch or a crash)
    detail: str = ""  # the full traceback text, or the worker's last stderr lines after a crash
    seconds: float = 0.0
    stage: str = ""  # the last stage the case reached (load, parse, build, reload, context, feed, execute, check)

    @property
    def signature(self) -> str:
        """What makes two findings the same bug: kind, exception type and where it was raised."""
        return f"{self.kind}:{self.error_type}:{self.where}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Outcome":
        return cls(**data)


def outcome_of_exception(error: BaseException, seconds: float = 0.0) -> Outcome:
    """CLEAN for what the CLI reports as one line with exit code 2 (tensorkiln/cli/main.py): a TensorkilnError,
    or an OSError (a file that cannot be read: a missing external-data file, say). TRACEBACK for anything else,
    MemoryError and RecursionError included: the library should have refused the input before it got that far."""
    from ..errors import TensorkilnError

    if isinstance(error, HarnessSkip):
        return Outcome(SKIPPED, type(error).__name__, "harness", str(error), seconds=seconds)
    if isinstance(error, OutputMismatch):
        return Outcome(MISMATCH, type(error).__name__, error.check, str(error).splitlines()[0][:500],
                       "".join(traceback.format_exception(type(error), error, error.__traceback__)), seconds)
    kind = CLEAN if isinstance(error, (TensorkilnError, OSError)) else TRACEBACK
    lines = str(error).splitlines()
    frames = traceback.extract_tb(error.__traceback__)
    detail = "" if kind == CLEAN else "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return Outcome(kind, type(error).__name__, _where(frames), lines[0][:500] if lines else "", detail, seconds)


def _where(frames: traceback.StackSummary) -> str:
    """The innermost frame inside tensorkiln (not the fuzzer itself), else the innermost frame."""
    for frame in reversed(frames):
        path = frame.filename.replace("\\", "/")
        if "/tensorkiln/" in path and "/tensorkiln/fuzz/" not in path:
            return f"{path[path.rindex('/tensorkiln/') + 1:]}:{frame.lineno}"
    if frames:
        frame = frames[-1]
        return f"{frame.filename.rsplit('/', 2)[-1] if '/' in frame.filename else frame.filename}:{frame.lineno}"
    return "?"
