"""`--threads N`, shared by the kiln commands that run engines or kernels (build times tactics, run, demo, serve);
`kiln bench` has its own, which it also reports."""
from __future__ import annotations

import argparse

from .inputs import positive_int

THREADS_HELP = ("CPU threads of the kernels (torch.set_num_threads; default: one per core, as onnxruntime). On a "
                "machine other processes share, fewer threads than cores keep latency steady")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)


def apply_threads(args: argparse.Namespace) -> None:
    """Set the thread count the parsed arguments ask for (none asked: PyTorch's default)."""
    count = getattr(args, "threads", None)
    if count is not None:
        from ..cpu_threads import set_threads

        set_threads(count)
