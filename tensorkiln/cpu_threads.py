"""CPU threads that behave on a shared machine.

PyTorch's CPU kernels (and oneDNN and MKL inside them) run on an OpenMP team (libgomp). By default a libgomp thread
that reaches the end of a parallel region spins for about 300,000 iterations before it sleeps. On a machine where
other processes hold cores, a team member that is not scheduled keeps the others spinning at every barrier, and
each layer waits a scheduler slice: measured on 2 cores with one other process spinning, the PP-OCR classifier took
280 ms instead of 4 ms. onnxruntime's pool hands work to whichever threads run; libgomp's static schedule cannot.
So tensorkiln asks libgomp to sleep at once (OMP_WAIT_POLICY=PASSIVE), which must be in the environment before the
OpenMP runtime loads, i.e. before `import torch`: `import tensorkiln` sets it where the user has not (an explicit
OMP_WAIT_POLICY or GOMP_SPINCOUNT wins), and `passive_waiting()` says whether it took effect.
"""
from __future__ import annotations

import contextlib
import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"


def request_passive_waiting() -> None:
    """Set OMP_WAIT_POLICY=PASSIVE for the OpenMP runtime PyTorch loads, unless the user chose a policy (or a spin
    count) or PyTorch is already loaded (the runtime read its settings then)."""
    if "torch" not in sys.modules and WAIT_POLICY not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ[WAIT_POLICY] = "PASSIVE"


def passive_waiting() -> bool:
    """Whether the process's OpenMP threads sleep instead of spinning when idle (as far as the environment says)."""
    return os.environ.get(WAIT_POLICY, "").strip().upper() == "PASSIVE"


def set_threads(count: int | None) -> int:
    """Use `count` intra-op CPU threads (None: leave PyTorch's choice, one per physical core); the count in use."""
    import torch

    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()


@contextlib.contextmanager
def threads(count: int | None):
    """Run with `count` intra-op threads (None: as they are), restoring the previous setting after; yields the count
    in use. Per calling thread: PyTorch's OpenMP team size is thread-local."""
    import torch

    saved = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)
