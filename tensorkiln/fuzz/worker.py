"""The worker process: runs the cases the runner sends, one at a time, and answers each with its outcome.

It runs apart from the runner so that a case that kills the process (SIGSEGV, SIGFPE, an abort) or never
returns is a finding, not the end of the campaign. Its address space is limited (RLIMIT_AS), so a case that
asks for hundreds of gigabytes fails with MemoryError instead of taking the machine; faulthandler writes the
Python stack to stderr on a fatal signal, and on SIGUSR1 (sent by the runner before it kills a hung worker).

Protocol, over the worker's stdin and its original stdout (fd 1 is pointed at stderr, so that nothing the
library prints can corrupt it): each message is a 4-byte big-endian length and a payload; the runner sends
encoded cases, the worker answers one JSON outcome per case, after a first {"ready": pid} message.
"""
from __future__ import annotations

import faulthandler
import json
import logging
import os
import resource
import signal
import struct
import sys
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO

HEADER = struct.Struct(">I")


def write_message(stream: BinaryIO, payload: bytes) -> None:
    stream.write(HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    """`size` bytes, or None at the end of the stream (the other side is gone)."""
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream: BinaryIO) -> bytes | None:
    header = read_exactly(stream, HEADER.size)
    if header is None:
        return None
    return read_exactly(stream, HEADER.unpack(header)[0])


def limit_memory(limit_bytes: int) -> None:
    """Cap the address space: allocations past it raise MemoryError (numpy, torch) instead of swapping."""
    if limit_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def quiet_and_single_threaded() -> None:
    """One thread (the machine is shared; threads only add noise), no warnings or logs on stderr per case."""
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)


def warm_up() -> None:
    """Import what the targets use before the first case, so its time limit does not pay for imports."""
    import tensorkiln.builder  # noqa: F401
    import tensorkiln.importers.caffe  # noqa: F401
    import tensorkiln.importers.onnx  # noqa: F401
    import tensorkiln.runtime  # noqa: F401
    from tensorkiln.kernels.registry import has_kernel

    has_kernel("convolution")  # loads the CPU kernels
    import onnxruntime  # noqa: F401 - the ONNX target's reference


def serve(memory_limit: int) -> None:
    from .case import Case
    from .targets import run_case

    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # print() in library code now goes to stderr, not into the protocol
    limit_memory(memory_limit)
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    quiet_and_single_threaded()
    warm_up()
    protocol_in = sys.stdin.buffer
    with tempfile.TemporaryDirectory(prefix="tkfuzz-worker-") as folder:
        write_message(protocol_out, json.dumps({"ready": os.getpid()}).encode())
        while (message := read_message(protocol_in)) is not None:
            outcome = run_case(Case.decode(message), Path(folder) / "scratch")
            write_message(protocol_out, json.dumps(outcome.to_json()).encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
