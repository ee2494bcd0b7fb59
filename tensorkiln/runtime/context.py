"""ExecutionContext: per-request state of an engine, and execution."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..errors import InputError
from ..ir.dtypes import DataType
from ..ir.infer import to_torch
from ..tactics.selection import kernel_for_tactic


class ExecutionContext:
    """Runs an engine. Several contexts may share one engine; a context is not thread-safe."""

    def __init__(self, engine, use_arena: bool = False):
        """`use_arena` places every activation in the engine's planned arena (one allocation): on the CPU
        this costs a copy per activation, so it is off by default there; it proves the memory plan."""
        self.engine = engine
        plan = engine.plan
        self._steps = [(kernel_for_tactic(s.tactic), s.op, s.inputs, s.outputs) for s in plan.steps]
        self._output_names = [t.name for t in plan.outputs]
        self._free_after = self._last_uses()
        self._arena_views = self._arena_views_of(plan) if use_arena and plan.memory else {}
        self._arena_pointer = next(iter(self._arena_views.values())).untyped_storage().data_ptr() \
            if self._arena_views else None

    @staticmethod
    def _arena_views_of(plan) -> dict[str, torch.Tensor]:
        arena = torch.empty(plan.memory.arena_bytes, dtype=torch.uint8)
        views = {}
        for spec in plan.tensors:
            offset = plan.memory.offsets.get(spec.name)
            if offset is not None:
                raw = arena[offset:offset + spec.nbytes]
                views[spec.name] = raw.view(spec.dtype.torch).reshape(spec.shape)
        return views

    def _last_uses(self) -> list[list[str]]:
        """For each step, the activations no later step or output needs (freed right after it)."""
        keep = set(self._output_names) | set(self.engine.weights)
        last: dict[str, int] = {}
        for index, (_, _, inputs, outputs) in enumerate(self._steps):
            for name in (*inputs, *outputs):
                if name is not None and name not in keep:
                    last[name] = index
        free: list[list[str]] = [[] for _ in self._steps]
        for name, index in last.items():
            free[index].append(name)
        return free

    def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the engine on `inputs` ({name: numpy array or torch tensor}).

        Returns {output name: array}: numpy arrays when the inputs were numpy, torch tensors otherwise.
        """
        feed, as_numpy = self._check_inputs(inputs)
        env: dict[str, torch.Tensor] = dict(self.engine.weights)
        env.update(feed)
        with torch.inference_mode():
            for (fn, op, in_names, out_names), free in zip(self._steps, self._free_after):
                results = fn(op, [None if n is None else env[n] for n in in_names])
                if self._arena_views:
                    results = [self._into_arena(name, value) for name, value in zip(out_names, results)]
                env.update(zip(out_names, results))
                for name in free:
                    env.pop(name, None)
        outputs = {name: env[name] for name in self._output_names}
        if as_numpy:
            return {name: t.contiguous().numpy() for name, t in outputs.items()}
        return outputs

    __call__ = execute

    def _into_arena(self, name: str, value: torch.Tensor) -> torch.Tensor:
        view = self._arena_views.get(name)
        if view is None:  # held outside the arena; must not be a view into memory the arena reuses
            shares_arena = value.untyped_storage().data_ptr() == self._arena_pointer
            return value.clone() if shares_arena else value
        view.copy_(value)
        return view

    def _check_inputs(self, inputs: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
        specs = {t.name: t for t in self.engine.plan.inputs}
        unknown = sorted(set(inputs) - set(specs))
        if unknown:
            raise InputError(f"unknown input names {unknown}; the engine's inputs are {sorted(specs)}")
        missing = sorted(set(specs) - set(inputs))
        if missing:
            raise InputError(f"missing inputs {missing}; the engine's inputs are "
                             + ", ".join(f"{s.name} {s.dtype.value}{list(s.shape)}" for s in specs.values()))
        feed, as_numpy = {}, True
        for name, value in inputs.items():
            spec = specs[name]
            if isinstance(value, torch.Tensor):
                as_numpy = False
                dtype, tensor = DataType.from_torch(value.dtype), value
            else:
                array = np.asarray(value)
                dtype = DataType.from_numpy(array.dtype)
                tensor = to_torch(array)
            if tuple(tensor.shape) != spec.shape:
                raise InputError(f"input {name!r} has shape {tuple(tensor.shape)}, but the engine was built for "
                                 f"{spec.shape}; pass that shape or rebuild with --shapes {name}:"
                                 + "x".join(str(d) for d in tensor.shape))
            if dtype is not spec.dtype:
                raise InputError(f"input {name!r} has dtype {dtype.value}, but the engine expects "
                                 f"{spec.dtype.value}; convert it first (e.g. array.astype('{spec.dtype.value}'))")
            feed[name] = tensor
        return feed, as_numpy
