"""Weights shared by the engines of one model (an engine with optimization profiles holds one engine per shape).

Weights do not change with the input shape: the specializations of a model (profile_builder.py, runtime/profiles.py)
import the same decoded initializer arrays (importers/onnx, `decoded_initializers`), and a WeightCache turns each such
array into the engine's torch tensor once, and each torch tensor into its device copy once. A new shape's engine then
copies, converts (FP16) and uploads only the weights that are new (those a pass computed for it), and shares the
others with the engines before it, with everything kept on them (a CPU convolution's packed oneDNN weight).

Entries are keyed by the identity of the array or tensor they were made from, and hold it only weakly: an entry goes
when its source is freed (a specialization evicted from the cache), so the cache never keeps memory alive itself.
Shared tensors are never written: engines treat their weights as immutable.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np
import torch


class WeightCache:
    """Engine weights made once per source array, and device copies made once per engine weight."""

    def __init__(self):
        self._entries: dict[Hashable, tuple[weakref.ref, Any]] = {}
        self._lock = threading.RLock()  # a finalizer (_forget) may run inside a locked section, in the same thread
        self.hits = 0
        self.misses = 0

    def derived(self, source, variant: Hashable, make: Callable[[], Any]) -> Any:
        """`make()`, the `variant` of `source` (e.g. its FP16 torch tensor; a tuple: of all of them), made once while
        `source` lives."""
        sources = source if isinstance(source, tuple) else (source,)
        key = (tuple(id(s) for s in sources), variant)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and all(ref() is s for ref, s in zip(entry[0], sources)):
                self.hits += 1
                return entry[1]
        value = make()
        with self._lock:
            self.misses += 1
            self._entries[key] = (tuple(weakref.ref(s) for s in sources), value)
        for s in sources:
            weakref.finalize(s, self._forget, key)
        return value

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and any(ref() is None for ref in entry[0]):  # not a newer entry at the same address
                del self._entries[key]

    def engine_weight(self, tensor, reduced: torch.dtype | None, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The engine weight of a network constant (`make` builds it) at dtype `reduced`, shared by every engine
        built from the same array."""
        return self.derived(tensor.value, ("engine", str(tensor.dtype), str(reduced)), make)

    def device_weight(self, weight: torch.Tensor, device: torch.device, memory_format: torch.memory_format,
                      make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The copy of an engine weight on `device` in `memory_format` (`make` moves it), shared likewise."""
        return self.derived(weight, ("device", str(device), str(memory_format)), make)

    def __len__(self) -> int:
        return len(self._entries)


_ACTIVE: contextvars.ContextVar[WeightCache | None] = contextvars.ContextVar("weight_cache", default=None)


@contextlib.contextmanager
def sharing(cache: WeightCache | None) -> Iterator[None]:
    """While a build runs its passes: the constants they derive from the model's are shared (shared_derivation)."""
    token = _ACTIVE.set(cache)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def shared_derivation(sources: Sequence[np.ndarray | None], variant: Hashable, make: Callable[[], np.ndarray]):
    """`make()`: the array a pass derives from the constants `sources` (e.g. sibling weights concatenated), made
    once per set of source arrays while the build shares weights (read-only then: other engines hold it), so that
    the engine weight made from it is shared too. Outside `sharing`, simply make()."""
    cache, present = _ACTIVE.get(), tuple(s for s in sources if s is not None)
    if cache is None or not present:
        return make()

    def read_only() -> np.ndarray:
        value = make()
        value.flags.writeable = False
        return value
    return cache.derived(present, (variant, tuple(s is None for s in sources)), read_only)
