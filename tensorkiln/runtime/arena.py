"""The activation arena of a memory plan, as one CPU allocation with a typed view per tensor."""
from __future__ import annotations

import torch


class Arena:
    def __init__(self, plan):
        self._buffer = torch.empty(plan.memory.arena_bytes, dtype=torch.uint8)
        self._pointer = self._buffer.untyped_storage().data_ptr()
        self._raw: dict[str, torch.Tensor] = {}  # name -> its planned bytes, typed, in its planned shape (row-major)
        self._views: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}  # (name, strides) -> view
        for spec in plan.tensors:
            offset = plan.memory.offsets.get(spec.name)
            if offset is not None:
                raw = self._buffer[offset:offset + spec.nbytes]
                self._raw[spec.name] = raw.view(spec.dtype.torch).reshape(spec.shape)

    def place(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """The tensor `name` as it lives in the arena (a copy of `value` into its planned bytes).

        The copy keeps `value`'s memory format (channels-last engines make NHWC activations; a row-major copy
        would send the next convolution down the NCHW path, so arena runs would not run what plain runs do).
        Any dense layout fills exactly the planned bytes; other values (broadcast or sliced views) get the
        layout empty_like gives them, which is dense too."""
        raw = self._raw.get(name)
        if raw is None:  # held outside the arena; must not be a view into memory the arena reuses
            return value.clone() if value.untyped_storage().data_ptr() == self._pointer else value
        if value.shape != raw.shape:  # copy_ broadcasts it into the planned shape, row-major
            strides = raw.stride()
        else:
            strides = torch.empty_like(value, device="meta").stride()
        view = self._views.get((name, strides))
        if view is None:
            view = self._views[(name, strides)] = raw.as_strided(raw.shape, strides)
        view.copy_(value)
        return view
