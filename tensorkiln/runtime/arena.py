"""The activation arena of a memory plan, as one CPU allocation with a typed view per tensor."""
from __future__ import annotations

import torch


class Arena:
    def __init__(self, plan):
        self._buffer = torch.empty(plan.memory.arena_bytes, dtype=torch.uint8)
        self._pointer = self._buffer.untyped_storage().data_ptr()
        self._views: dict[str, torch.Tensor] = {}
        for spec in plan.tensors:
            offset = plan.memory.offsets.get(spec.name)
            if offset is not None:
                raw = self._buffer[offset:offset + spec.nbytes]
                self._views[spec.name] = raw.view(spec.dtype.torch).reshape(spec.shape)

    def place(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """The tensor `name` as it lives in the arena (a copy of `value` into its planned bytes)."""
        view = self._views.get(name)
        if view is None:  # held outside the arena; must not be a view into memory the arena reuses
            return value.clone() if value.untyped_storage().data_ptr() == self._pointer else value
        view.copy_(value)
        return view
