"""The CPU executor: a plan compiled once into a flat program over numbered slots.

At batch 1 a small CPU engine (Silero VAD, the PP-OCR classifier) runs in about 0.1 ms in onnxruntime; a per-step
cost of tens of microseconds in Python would dominate it. So everything that does not depend on the input values
is done once, when the context is made, not on every run:

- every tensor name (inputs, weights, activations) gets a slot number; a run fills a list of slots instead of a
  dictionary keyed by names, and weights sit in their slots from the start;
- each step becomes (call, input slots, output slots, slots to free after it): the call is the tactic's kernel
  bound to its attributes, or, where kernels/cpu/bound.py has a binder for the tactic, a call specialized for the
  step's static shapes and weights (a convolution's weight packed for oneDNN, its epilogue chosen once);
- the steps' compute dtypes and the outputs' dtypes are looked at once, so a run casts only what must be cast;
- convolutions and matrix products too small to split run on the calling thread alone (serial_layers.py): the
  context's thread count is set around them (torch.set_num_threads: this thread's OpenMP team, 0.1 us a switch),
  and their weights are packed for one thread (oneDNN's packed layout depends on the thread count).
oneDNN packs weights for the thread count in force, so a context keeps one program per thread count it runs on
(the first run on a new count binds the steps again, packing the weights for it).

The program computes exactly what ExecutionContext's step-by-step path computes (tests compare the two on every
model they build); that path stays for profiling and layer-wise checks, which need a hook around each step.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from ..cpu_threads import threads as thread_count
from ..ir.dtypes import DataType
from ..kernels.cpu.bound import BoundInput, bind_kernel
from ..kernels.cpu.serial_layers import runs_on_one_thread
from ..tactics.selection import parse_tactic
from .cpu_memory import retain_freed_memory

NO_TENSOR = 0  # the slot that always holds None (an omitted optional input)

Call = Callable[[list], Sequence[torch.Tensor]]


class StaticExecutor:
    """Runs a CPU engine's steps from a program built once (see the module docstring)."""

    def __init__(self, engine, kernels: Sequence[Callable], compute_dtypes: Sequence[torch.dtype | None],
                 free_after: Sequence[Sequence[str]]):
        plan = engine.plan
        weights = engine.device_weights()
        self.retains_memory = retain_freed_memory()  # freed activations reused by the next run, not unmapped
        self._slots: dict[str, int] = {}
        template: list = [None]
        for name, value in weights.items():
            template.append(value)
            self._slots[name] = len(template) - 1
        self.input_slots = tuple((spec.name, self._slot(spec.name, template)) for spec in plan.inputs)
        specs = {spec.name: spec for spec in (*plan.inputs, *plan.tensors)}
        self._layout = []  # per step: what binding needs, and the slots it reads, writes and frees
        for step, fn, compute, free in zip(plan.steps, kernels, compute_dtypes, free_after):
            ins = tuple(NO_TENSOR if name is None else self._slot(name, template) for name in step.inputs)
            outs = tuple(self._slot(name, template) for name in step.outputs)
            bound_inputs = tuple(None if name is None else _bound_input(name, specs, weights, engine)
                                 for name in step.inputs)
            bound_outputs = tuple(_bound_input(name, specs, weights, engine) for name in step.outputs)
            self._layout.append((step, fn, compute, bound_inputs, bound_outputs, ins, outs,
                                 tuple(self._slots[name] for name in free if name in self._slots)))
        self._programs: dict[int, tuple] = {}
        self._program_threads = torch.get_num_threads()
        self._program = self._compiled(self._program_threads)
        self.serial_steps = sum(entry[4] is True for entry in self._program)
        self._template = template
        self.output_slots = tuple((spec.name, self._slots[spec.name], _io_conversion(spec.dtype))
                                  for spec in plan.outputs)

    def _compiled(self, threads: int) -> tuple:
        """The program for runs on `threads` threads: oneDNN packs weights for the thread count in force, and a
        weight packed for another count is reordered on every call (ResNet-50 packed for 2 threads, run on 1: 164 ms
        against 63), so each count a context runs on gets its program (bound once; packed weights are shared)."""
        if threads not in self._programs:
            program = []
            with thread_count(threads):
                for step, fn, compute, bound_inputs, bound_outputs, ins, outs, free in self._layout:
                    serial = _serial(step.op, bound_inputs, bound_outputs)
                    with thread_count(1 if serial else None):  # small layers' weights packed for one thread
                        call = _step_call(step, fn, compute, bound_inputs, bound_outputs)
                    program.append((call, ins, outs, free, serial))
            self._programs[threads] = tuple(program)
        return self._programs[threads]

    def _slot(self, name: str, template: list) -> int:
        if name not in self._slots:
            template.append(None)
            self._slots[name] = len(template) - 1
        return self._slots[name]

    def run(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The outputs for `feed` (input name -> tensor, already on the CPU in the engine's layout)."""
        slots = self._template.copy()
        for name, index in self.input_slots:
            slots[index] = feed[name]
        threads = torch.get_num_threads()  # this thread's OpenMP team size
        if threads != self._program_threads:
            self._program, self._program_threads = self._compiled(threads), threads
        current = threads
        try:
            for call, ins, outs, free, serial in self._program:
                if serial is not None and threads > 1:
                    wanted = 1 if serial else threads
                    if wanted != current:
                        torch.set_num_threads(wanted)
                        current = wanted
                results = call([slots[i] for i in ins])
                for index, value in zip(outs, results):
                    slots[index] = value
                for index in free:
                    slots[index] = None
        finally:
            if current != threads:
                torch.set_num_threads(threads)
        return {name: convert(slots[index]) for name, index, convert in self.output_slots}


def _serial(op, inputs, outputs) -> bool | None:
    """kernels/cpu/serial_layers.py's rule on what binding knows of the step's inputs and outputs."""
    return runs_on_one_thread(op, [None if spec is None else spec.shape for spec in inputs],
                              [spec.shape for spec in outputs])


def _bound_input(name: str, specs: dict, weights: dict[str, torch.Tensor], engine) -> BoundInput:
    """What a binder may know of a step input before any run: its shape and dtype, its value for a weight."""
    if name in weights:
        value = weights[name]
        return BoundInput(tuple(value.shape), value.dtype, value, engine.memory_format(value.dim()))
    spec = specs[name]
    return BoundInput(spec.shape, spec.dtype.torch, None, engine.memory_format(len(spec.shape)))


def _step_call(step, fn, compute: torch.dtype | None, inputs: tuple[BoundInput | None, ...],
               outputs: tuple[BoundInput, ...]) -> Call:
    """The call that runs `step` on its argument list: specialized where a binder serves its tactic and the step
    computes in its inputs' dtypes, else the kernel with the step's attributes bound."""
    _, kind, impl = parse_tactic(step.tactic)
    if compute is None:
        bound = bind_kernel(kind, impl, step.op, inputs, outputs)
        if bound is not None:
            return bound
    call = functools.partial(fn, step.op)
    if compute is None:
        return call
    return functools.partial(_cast_then_call, call, compute)


def _cast_then_call(call: Call, compute: torch.dtype, args: list) -> Sequence[torch.Tensor]:
    """The step's floating inputs in its compute dtype first (as ExecutionContext's step-by-step path casts them)."""
    return call([a.to(compute) if a is not None and a.is_floating_point() and a.dtype != compute else a
                 for a in args])


def _io_conversion(dtype: DataType) -> Callable[[torch.Tensor], torch.Tensor]:
    """An output as the caller gets it: its declared dtype, row-major (channels-last engines compute 4-D activations
    NHWC; callers expect the standard layout)."""
    target = dtype.torch

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        return (tensor if tensor.dtype == target else tensor.to(target)).contiguous()

    return convert
