"""Freed activation memory kept in the process between CPU runs (glibc's malloc), as onnxruntime's arena keeps it.

Every step of a CPU run allocates its outputs afresh (oneDNN's convolution has no `out=`), and frees them when the
last reader is done. With glibc's default settings a freed block of a few megabytes goes back to the kernel (a block
above the mmap threshold is unmapped; the top of the heap is trimmed past the trim threshold), so the next run maps
it again and the kernel zeroes every page on first touch: UltraFace RFB-320 took 1,168 minor page faults per run,
about 1.1 ms of system time in a 6.8 ms run (5.3 ms with the settings below, no page faults). onnxruntime plans its
activations into an arena that it never returns. `retain_freed_memory` makes malloc do the same for blocks up to
MMAP_THRESHOLD_BYTES: they come from the heap, and the heap is not trimmed, so the memory of a run is reused by the
next. The process keeps its peak heap (what the largest run needed) until it exits; larger blocks are mapped as
before.

The settings are process-wide and glibc's (mallopt); elsewhere (musl, macOS, Windows) nothing changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit hosts (DEFAULT_MMAP_THRESHOLD_MAX): a larger value is refused
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 2 ** 31 - 1  # the largest the C int takes: the heap's top is not trimmed below 2 GiB free


@functools.cache
def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to MMAP_THRESHOLD_BYTES for reuse (once per process); whether
    it took effect."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trimmed = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1  # 1: success
    return mapped and trimmed
