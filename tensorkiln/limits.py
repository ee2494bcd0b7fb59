"""Resource limits: how much memory a model or an engine may make tensorkiln ask for.

A 200-byte ONNX file can declare a tensor of 10^10 elements (a ConstantOfShape, an Expand, an input), and a
prototxt can declare `input_dim: 100000`; without a limit the import, the build or the first execution asks
the allocator for tens of GiB and dies (or swaps the machine to a halt). Every place that is about to hold a
tensor's data checks its declared size against a memory budget first, before allocating:

    limits = ResourceLimits.from_text("64GiB")          # kiln: --memory-budget 64GiB
    network = parse_onnx("model.onnx", limits=limits)
    engine = Builder(BuilderConfig(limits=limits)).build(network)
    context = engine.create_execution_context(limits=limits)

A tensor past the budget is one ResourceLimitError naming the tensor, its size, the budget and how to raise it.
The number of layers a network may have is bounded too (`max_layers`, kiln build --max-layers): loops are unrolled
at import, and a 300-byte model can ask for a billion iterations.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import ResourceLimitError

GiB = 1 << 30
# The default budget is half of the memory this process can have (physical memory, or the container's limit or
# the address-space limit where lower): the other half is left for what the budget does not count (the engine's
# copy of the weights while it is built, PyTorch's workspaces, the rest of the machine). It is capped because a
# budget is a bound on what a hostile or broken file can make the process ask for: real models' largest tensors
# are a few GiB, and a model that needs more than DEFAULT_BUDGET_CAP in all is rare enough to ask for it with the
# flag.
DEFAULT_BUDGET_CAP = 32 * GiB
# The most layers a network may have. Layers cost memory and build time that no tensor size shows: a 300-byte model
# whose Loop runs 10^9 times is unrolled into 5 * 10^9 layers (about 3 KiB and 150 us each on 2 cores). Real models
# have up to some ten thousand layers; this many take about 15 s to import.
DEFAULT_MAX_LAYERS = 100_000
FALLBACK_MEMORY = 16 * GiB  # where the machine's memory cannot be read (no sysconf): a laptop's
_CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")

# "8GiB", "512 MiB", "1.5G", "100000000": binary units (KiB, MiB, GiB, TiB and the bare K, M, G, T, as docker
# and trtexec read them) and decimal ones (kB, MB, GB, TB)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": GiB, "GIB": GiB,
          "T": 1 << 40, "TIB": 1 << 40, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12}
_SIZE_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def machine_memory_bytes() -> int:
    """The memory this process can have: physical memory, or the cgroup's limit or the process's address-space
    limit (RLIMIT_AS, as a fuzzing worker sets) where that is lower. Read each time (a few microseconds): a limit
    may be set after import."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        memory = FALLBACK_MEMORY
    for path in _CGROUP_LIMIT_FILES:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (no limit) is not a number
            memory = min(memory, int(text))
    try:
        import resource
    except ImportError:  # not on Windows
        return memory
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return memory if soft == resource.RLIM_INFINITY else min(memory, soft)


def default_memory_budget() -> int:
    return min(machine_memory_bytes() // 2, DEFAULT_BUDGET_CAP)


def format_bytes(count: int) -> str:
    """1536 -> '1.5 KiB', 65536 -> '64 KiB' (one decimal, none where it is 0)."""
    if count < 1024:
        return f"{count} B"
    units = (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", GiB), ("TiB", 1 << 40))
    for unit, size in units[:-1]:
        text = f"{count / size:.1f}".removesuffix(".0")
        if float(text) < 1024:  # else the next unit: '1 MiB', not '1024 KiB'
            return f"{text} {unit}"
    return f"{count / units[-1][1]:.1f}".removesuffix(".0") + " TiB"


def tensor_nbytes(shape: Sequence[int], itemsize: int) -> int:
    """Bytes of a tensor, in exact integers (no overflow); a dimension known only at run time (-1) counts 1."""
    return math.prod(max(int(d), 1) if int(d) < 0 else int(d) for d in shape) * itemsize


@dataclasses.dataclass(frozen=True)
class ResourceLimits:
    """The memory budget: the most bytes one tensor may need, and the most that the constants of a network, or
    an engine's weights and activation arena together, may need; and the most layers a network may have."""

    memory_budget_bytes: int = dataclasses.field(default_factory=default_memory_budget)
    max_layers: int = DEFAULT_MAX_LAYERS

    def __post_init__(self):
        if isinstance(self.memory_budget_bytes, bool) or not isinstance(self.memory_budget_bytes, int) \
                or self.memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be a positive number of bytes, not "
                             f"{self.memory_budget_bytes!r}; e.g. ResourceLimits.from_text('8GiB')")
        if isinstance(self.max_layers, bool) or not isinstance(self.max_layers, int) or self.max_layers <= 0:
            raise ValueError(f"max_layers must be a positive number, not {self.max_layers!r}")

    @classmethod
    def from_text(cls, text: str) -> "ResourceLimits":
        """'8GiB', '512MiB', '1.5G', '64GB' (decimal), '100000000' (bytes) -> ResourceLimits."""
        match = _SIZE_TEXT.fullmatch(text)
        unit = match and match.group(2).upper()
        if not match or unit not in _UNITS:
            raise ValueError(f"memory size {text!r} is not a number with a unit; write it like 8GiB, 512MiB or "
                             "64GB (binary: KiB MiB GiB TiB or K M G T; decimal: kB MB GB TB; none: bytes)")
        count = int(float(match.group(1)) * _UNITS[unit])
        if count <= 0:
            raise ValueError(f"memory size {text!r} is not positive; give the budget in bytes, e.g. 8GiB")
        return cls(count)  # the other limits at their defaults

    def describe(self) -> str:
        return format_bytes(self.memory_budget_bytes)

    def check_tensor(self, what: str, shape: Sequence[int], dtype: Any) -> int:
        """Raise ResourceLimitError unless a tensor of `shape` and `dtype` (a DataType, numpy or torch dtype) fits
        in the budget; call it before allocating. `what` names the tensor ("tensor 'y' of layer 'expand'").
        Returns the tensor's bytes."""
        nbytes = tensor_nbytes(shape, _itemsize(dtype))
        if nbytes > self.memory_budget_bytes:
            dims = ", ".join(str(int(d)) for d in shape)
            needed, budget = self._sizes(nbytes)
            raise ResourceLimitError(f"{what} ({_dtype_name(dtype)}[{dims}]) needs {needed}, more than the memory "
                                     f"budget of {budget}; {self.raise_hint(nbytes)}")
        return nbytes

    def check_total(self, what: str, nbytes: int) -> None:
        """Raise ResourceLimitError unless `nbytes` (several tensors together, described by `what`) fit."""
        if nbytes > self.memory_budget_bytes:
            needed, budget = self._sizes(nbytes)
            raise ResourceLimitError(f"{what} need {needed}, more than the memory budget of {budget}; "
                                     f"{self.raise_hint(nbytes)}")

    def _sizes(self, nbytes: int) -> tuple[str, str]:
        """A size past the budget and the budget, readable, and exact where they would read the same."""
        needed, budget = format_bytes(nbytes), self.describe()
        if needed == budget:
            return f"{needed} ({nbytes} bytes)", f"{budget} ({self.memory_budget_bytes} bytes)"
        return needed, budget

    def check_layer_count(self, count: int, what: str) -> None:
        """Raise ResourceLimitError if a network of `count` layers (`what` adds the last) is past max_layers."""
        if count > self.max_layers:
            raise ResourceLimitError(f"{what} would be layer {count} of the network, more than the {self.max_layers} "
                                     "layers allowed (a loop unrolled too many times?); if the model is meant to be "
                                     f"this large, raise the limit with --max-layers {2 * self.max_layers} (kiln "
                                     f"build) or ResourceLimits(max_layers={2 * self.max_layers}) (Python)")

    @staticmethod
    def raise_hint(nbytes: int) -> str:
        """The fix: a budget that would fit `nbytes` (the next power of two, in whole MiB or GiB), and the machine's
        memory."""
        power = max(20, (max(nbytes, 1) - 1).bit_length())
        suggested = f"{1 << (power - 30)}GiB" if power >= 30 else f"{1 << (power - 20)}MiB"
        return (f"if the model is meant to be this large, raise the budget with --memory-budget {suggested} (kiln) "
                f"or limits=ResourceLimits.from_text('{suggested}') (Python); this process can use at most "
                f"{format_bytes(machine_memory_bytes())}")


# The limits of the build in progress, for code that creates tensors but is handed no limits (the passes' rewrites
# evaluate constant layers through ir.infer): the Builder sets its config's here while the passes run.
_ACTIVE: contextvars.ContextVar[ResourceLimits | None] = contextvars.ContextVar("resource_limits", default=None)


def active_limits() -> ResourceLimits:
    """The limits set by the enclosing `enforced(...)`, else the default ones."""
    return _ACTIVE.get() or ResourceLimits()


@contextlib.contextmanager
def enforced(limits: ResourceLimits) -> Iterator[ResourceLimits]:
    token = _ACTIVE.set(limits)
    try:
        yield limits
    finally:
        _ACTIVE.reset(token)


def _itemsize(dtype: Any) -> int:
    itemsize = getattr(dtype, "itemsize", None)  # DataType, numpy dtype, torch dtype (torch >= 2.1)
    if not isinstance(itemsize, int):  # a numpy scalar type (np.float32), a dtype name
        import numpy as np

        itemsize = np.dtype(dtype).itemsize
    return itemsize


def _dtype_name(dtype: Any) -> str:
    value = getattr(dtype, "value", None)  # a DataType's name ("float32")
    if isinstance(value, str):
        return value
    if type(dtype).__module__ == "torch":
        return str(dtype).replace("torch.", "")
    import numpy as np

    return np.dtype(dtype).name
