"""ExecutionContext: per-request state of an engine, and execution (CPU, or CUDA with graph replay)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
import time
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import InputError
from ..ir.dtypes import DataType
from ..ir.infer import to_torch
from ..limits import ResourceLimits
from ..tactics.selection import kernel_for_tactic
from ..tactics.timing import gpu_milliseconds
from .arena import Arena
from .static_executor import StaticExecutor


class ExecutionContext:
    """Runs an engine. Several contexts may share one engine (and its weights).

    Threads: a context serializes its own work. Executions (execute, execute_async's enqueueing, run_each_step,
    profile) and set_input_tensor from several threads take turns on one lock, so each gets its own correct result;
    they never overlap, and they never return another call's data (the arena, the CUDA graph's buffers and the bound
    inputs are per context). For parallelism give each thread a context of its own: contexts share the engine's
    weights, and cost only their activations. (execute_async's results are the context's output buffers, valid
    until its next execution, whichever thread starts that.)

    On CUDA, the first execution runs eagerly and captures a CUDA graph of the whole engine into static
    buffers; later executions copy the inputs in and replay it (`cuda_graph=False` turns this off). On the CPU,
    executions run a program compiled once when the context is made (runtime/static_executor.py: numbered slots,
    kernels bound to each step's shapes and weights, small layers on one thread).
    `use_arena` places every activation in the engine's planned arena on the CPU: each activation then
    costs a copy, so it is off by default; it proves the memory plan.

    `limits` bounds the memory of each input and activation, and of the activation arena: an engine past it (built
    with a larger budget, or edited) is refused here, before anything runs (ResourceLimitError).
    """

    def __init__(self, engine, use_arena: bool = False, cuda_graph: bool | None = None,
                 limits: ResourceLimits | None = None):
        self.engine = engine
        plan = engine.plan
        _check_memory(engine, limits or ResourceLimits())
        self.device = engine.device
        self._steps = [(kernel_for_tactic(s.tactic, plan.target), s.op, s.inputs, s.outputs) for s in plan.steps]
        self._compute_dtypes = [engine.compute_dtype(s) for s in plan.steps]
        self._output_specs = list(plan.outputs)
        self._input_specs = {t.name: t for t in plan.inputs}
        self._free_after = self._last_uses()
        self._arena = Arena(plan) if use_arena and plan.memory and self.device.type == "cpu" else None
        # CPU engines run from a program compiled once (slots, bound kernels); the arena's placement copies and the
        # hooks of run_each_step take the step-by-step path below
        self._static = None
        if self.device.type == "cpu" and self._arena is None:
            self._static = StaticExecutor(engine, [fn for fn, *_ in self._steps], self._compute_dtypes,
                                          self._free_after)
        dynamic = any(t.is_dynamic for t in plan.tensors)  # data-dependent sizes cannot be captured in a graph
        self._use_graph = self.device.type == "cuda" and not dynamic if cuda_graph is None else cuda_graph
        self._graph = None
        self._graph_mode: str | None = None  # "copy": inputs copied into the graph's buffers; "bound": read in place
        self._bound: dict[str, torch.Tensor] = {}  # set_input_tensor
        self._static_inputs: dict[str, torch.Tensor] = {}
        self._static_outputs: dict[str, torch.Tensor] = {}
        # one execution at a time: the arena, the graph's static buffers and the bound inputs are this context's
        # only copy (re-entrant: profile runs run_each_step)
        self._lock = threading.RLock()

    def _last_uses(self) -> list[list[str]]:
        """For each step, the activations no later step or output needs (freed right after it)."""
        keep = {t.name for t in self._output_specs} | set(self.engine.weights)
        last: dict[str, int] = {}
        for index, (_, _, inputs, outputs) in enumerate(self._steps):
            for name in (*inputs, *outputs):
                if name is not None and name not in keep:
                    last[name] = index
        free: list[list[str]] = [[] for _ in self._steps]
        for name, index in last.items():
            free[index].append(name)
        return free

    # ---- execution -----------------------------------------------------------------------------
    def execute(self, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run the engine on `inputs` ({name: numpy array or torch tensor}) and wait for the result. Without
        `inputs` it reads the tensors bound with `set_input_tensor`.

        Returns {output name: array}: numpy arrays when the inputs were numpy (a bfloat16 output as float32,
        which numpy lacks), torch tensors (on the engine's device, owned by the caller) otherwise.
        """
        with self._lock:
            feed, as_numpy = self._feed(inputs)
            outputs = self._run(feed, bound=inputs is None)
            if self.device.type == "cuda":
                torch.cuda.current_stream().synchronize()
            if as_numpy:  # numpy has no bfloat16: such outputs widen to float32 (exactly)
                return {name: _to_numpy(t) for name, t in outputs.items()}
            return {name: t.clone() if self._graph is not None else t for name, t in outputs.items()}

    __call__ = execute

    def execute_async(self, inputs: Mapping[str, torch.Tensor] | None = None,
                      stream: torch.cuda.Stream | None = None) -> dict[str, torch.Tensor]:
        """Enqueue the engine on `stream` (default: the current one) without waiting.

        Inputs are torch tensors on the engine's device, copied into the graph's input buffers; without `inputs`
        the engine reads the tensors bound with `set_input_tensor` where they lie (no copy). The returned tensors
        are the context's output buffers: valid until the next execution of this context. One context's
        executions share its graph's memory, so they must not overlap: enqueue them on one stream, or give each
        stream a context of its own (contexts share the engine's weights).
        """
        with self._lock:
            feed, _ = self._feed(inputs)
            if stream is None or self.device.type != "cuda":
                return self._run(feed, bound=inputs is None)
            with torch.cuda.stream(stream):
                return self._run(feed, bound=inputs is None)

    def set_input_tensor(self, name: str, tensor: torch.Tensor) -> None:
        """Bind `tensor` as input `name` (TensorRT's `set_tensor_address`, onnxruntime's IO binding): executions
        started without inputs read it where it lies, with no copy before the graph's replay. Write each request
        into it (a non-blocking copy from pinned host memory, or a producer kernel) before executing; keep it
        allocated while bound. The CUDA graph is captured for the bound tensors' addresses: binding another tensor
        recaptures it at the next execution, and so does switching between bound and passed inputs (a context holds
        one graph)."""
        if name not in self._input_specs:
            raise InputError(f"unknown input name {name!r}; the engine's inputs are {sorted(self._input_specs)}")
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != self.device.type:
            raise InputError(f"input {name!r}: bind a torch tensor on {self.device} (numpy inputs go through "
                             "execute(inputs), which copies them)")
        self._check_input(name, tensor, self._torch_dtype(name, tensor))
        with self._lock:
            previous = self._bound.get(name)
            if self._graph_mode == "bound" and not _same_memory(previous, tensor):
                self._release_graph()
            self._bound[name] = tensor

    def _feed(self, inputs: Mapping[str, Any] | None) -> tuple[dict[str, torch.Tensor], bool]:
        if inputs is not None:
            return self._check_inputs(inputs)
        unbound = sorted(set(self._input_specs) - set(self._bound))
        if unbound:
            raise InputError(f"inputs {unbound} are not bound: bind them with set_input_tensor, or pass the "
                             "inputs to execute")
        return self._bound, False

    def _run(self, feed: dict[str, torch.Tensor], bound: bool = False) -> dict[str, torch.Tensor]:
        if self._static is not None:
            with torch.inference_mode():  # CPU: no CUDA math modes to set
                return self._static.run(self._prepared(feed))
        mode = "bound" if bound else "copy"
        if self._graph is not None and self._graph_mode == mode:
            # The replay path, kept short: at batch 1 the GPU waits for it (ResNet-50 runs in about 0.35 ms).
            # Kernels and their math modes were fixed at capture; the input views are ordinary tensors (no
            # inference mode needed to write them).
            if not bound:
                for name, value in feed.items():  # one copy: to the device, the buffer's layout and its dtype at once
                    self._static_inputs[name].copy_(value, non_blocking=True)
            self._graph.replay()
            return dict(self._static_outputs)
        with torch.inference_mode(), _float32_math(self.engine.plan.precision):
            if not self._use_graph:
                return self._run_steps(self._prepared(feed))
            self._release_graph()
            self._capture(feed, bound)
        return self._run(feed, bound)

    def _release_graph(self) -> None:
        """Drop the CUDA graph (its memory pool goes once the outputs handed out are gone too)."""
        self._graph, self._graph_mode = None, None
        self._static_inputs, self._static_outputs = {}, {}

    def _prepared(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.engine.prepare_input(value) for name, value in feed.items()}

    def _static_input(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A new, uninitialized buffer for input `name`: on the device, in the engine's layout, and already in the
        dtype its readers compute in (an FP32 input of an FP16 engine is held as FP16: half the bytes, and no cast
        kernel)."""
        dtypes = {self._compute_dtypes[i] for i, (_, _, inputs, _) in enumerate(self._steps) if name in inputs}
        dtype = value.dtype
        if value.is_floating_point() and len(dtypes) == 1 and None not in dtypes:
            dtype = dtypes.pop()
        return torch.empty(value.shape, dtype=dtype, device=self.device,
                           memory_format=self.engine.memory_format(value.dim()))

    def _capture(self, feed: dict[str, torch.Tensor], bound: bool) -> None:
        graph = torch.cuda.CUDAGraph()
        capture = torch.cuda.graph(graph)
        # The warm-up runs on the stream the graph is captured on (PyTorch's, shared by every capture, the tactic
        # timer's too): cuBLAS holds a workspace per stream for the life of the process, 32 MiB on Hopper.
        side = capture.capture_stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: lazy initialization must not be captured
            warm_up = {name: self._static_input(name, value).copy_(value) for name, value in feed.items()}
            self._run_steps(warm_up, consume_feed=True)
        torch.cuda.current_stream().wait_stream(side)
        with capture:
            # The input buffers are allocated in the graph's own memory pool and handed over to the steps: once
            # an input's last reader has run, its memory holds later activations (ResNet-50 b256: the 74 MiB FP16
            # image batch is dead after the stem). Copying in: the context keeps views that do not own the memory,
            # and copies each execution's inputs into them before the replay, which is the only time they are
            # live. Bound: the graph reads the bound tensors, converted inside it where the engine's dtype or
            # layout differs.
            buffers = {name: self._static_input(name, value) for name, value in feed.items()}
            if bound:
                buffers = {name: _converted(value, buffers[name]) for name, value in feed.items()}
            else:
                with torch.inference_mode(False):  # ordinary tensors: the replay path writes them outside inference mode
                    self._static_inputs = {name: _unowned_view(buffer) for name, buffer in buffers.items()}
            self._static_outputs = self._run_steps(buffers, consume_feed=True)
        self._graph, self._graph_mode = graph, "bound" if bound else "copy"

    def _run_steps(self, feed: dict[str, torch.Tensor], hook=None, consume_feed: bool = False
                   ) -> dict[str, torch.Tensor]:
        """Every step in order; `hook(index, launch, args)`, when given, runs step `index` by calling `launch()`
        (its kernel on `args`) and returns the results (see `run_each_step`). With `consume_feed` the caller hands
        its input tensors over (the dict is emptied), so each is released after its last reader."""
        env: dict[str, torch.Tensor] = dict(self.engine.device_weights())
        env.update(feed)
        if consume_feed:
            feed.clear()
        for index, ((fn, op, in_names, out_names), free) in enumerate(zip(self._steps, self._free_after)):
            if hook is not None and getattr(op, "residual_in_place", False):
                # a hook may launch a step several times (timing) or read its inputs after it ran (checks)
                op = dataclasses.replace(op, residual_in_place=False)
            args = [None if n is None else env[n] for n in in_names]
            compute = self._compute_dtypes[index]
            if compute is not None:
                args = [a.to(compute) if a is not None and a.is_floating_point() and a.dtype != compute else a
                        for a in args]
            results = fn(op, args) if hook is None else hook(index, lambda: fn(op, args), args)
            if self._arena is not None:
                results = [self._arena.place(name, value) for name, value in zip(out_names, results)]
            env.update(zip(out_names, results))
            for name in free:
                env.pop(name, None)
        return {s.name: _as_io_dtype(env[s.name], s.dtype) for s in self._output_specs}

    def run_each_step(self, inputs: Mapping[str, Any], hook) -> dict[str, torch.Tensor]:
        """Run the engine eagerly (no CUDA graph), step by step: `hook(index, launch, args)` runs step `index`
        of `engine.plan.steps` by calling `launch()` and returns its results; `args` are the tensors the step
        reads, in its compute dtype. The profiler and the layer-wise check (tactics/check.py) use it."""
        feed, _ = self._check_inputs(inputs)
        with self._lock, torch.inference_mode(), _float32_math(self.engine.plan.precision):
            return self._run_steps(self._prepared(feed), hook)

    def profile(self, inputs: Mapping[str, Any], runs: int = 10) -> list[tuple[str, str, str, float]]:
        """Per-layer times: (step name, layer kind, tactic, median seconds) over `runs` runs.

        On CUDA each step is timed as the engine runs it, inside a CUDA graph (GPU time, no launch overhead), so
        the times add up to about the engine's latency; on the CPU by the wall clock of eager runs.
        """
        on_gpu = self.device.type == "cuda"
        samples: list[list[float]] = []
        with self._lock:  # other threads' executions would show in the times
            for _ in range(1 if on_gpu else runs + 1):  # one pass times each step `runs` times on the GPU
                timings: list[float] = []
                self.run_each_step(inputs, functools.partial(_gpu_time, timings, runs) if on_gpu
                                   else functools.partial(_wall_clock, timings))
                samples.append(timings)
        medians = np.median(np.array(samples if on_gpu else samples[1:]), axis=0)  # the first CPU run warms up
        return [(s.name, s.kind, s.tactic, float(t)) for s, t in zip(self.engine.plan.steps, medians)]

    # ---- inputs --------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
        """Every input checked before any work: a mapping of exactly the engine's input names to arrays or tensors of
        the engine's shapes and dtypes. Big-endian numpy arrays are converted to native byte order (same values);
        non-contiguous ones are copied. Anything else is one InputError that names the input and the fix."""
        specs = self._input_specs
        if not isinstance(inputs, Mapping):
            raise InputError(f"execute takes a mapping of input names to arrays, not {type(inputs).__name__}; pass "
                             "{" + ", ".join(f"{name!r}: array" for name in specs) + "}")
        if inputs.keys() != specs.keys():
            unknown = sorted(set(inputs) - set(specs), key=str)
            if unknown:
                raise InputError(f"unknown input names {unknown}; the engine's inputs are {sorted(specs)}")
            raise InputError(f"missing inputs {sorted(set(specs) - set(inputs))}; the engine's inputs are "
                             + ", ".join(f"{s.name} {s.dtype.value}{list(s.shape)}" for s in specs.values()))
        feed, as_numpy = {}, True
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                as_numpy = False
                tensor, dtype = value, self._torch_dtype(name, value)
                if value.layout is not torch.strided or value.device.type not in ("cpu", self.device.type):
                    raise InputError(f"input {name!r} is a {value.layout} tensor on {value.device}; pass a dense "
                                     f"tensor on the CPU or on {self.device} (e.g. tensor.to_dense().cpu())")
            else:
                tensor, dtype = _numpy_input(name, value, specs[name].dtype)
            self._check_input(name, tensor, dtype)
            feed[name] = tensor  # moved to the device and the engine's layout when it runs (_prepared, _static_input)
        return feed, as_numpy

    def _torch_dtype(self, name: str, tensor: torch.Tensor) -> DataType:
        try:
            return DataType.from_torch(tensor.dtype)
        except TypeError:
            raise InputError(f"input {name!r} has torch dtype {tensor.dtype}, which tensorkiln does not support; "
                             f"convert it to the engine's {self._input_specs[name].dtype.value} first") from None

    def _check_input(self, name: str, tensor: torch.Tensor, dtype: DataType) -> None:
        spec = self._input_specs[name]
        if tensor.shape != spec.shape:
            given = "a scalar (0-d)" if tensor.dim() == 0 else f"of shape {tuple(tensor.shape)}"
            fix = f"pass an array of that shape (array.reshape({spec.shape}))" if tensor.numel() == math.prod(
                spec.shape) else "pass an array of that shape"
            if tensor.dim():
                fix += f" or rebuild with --shapes {name}:" + "x".join(str(d) for d in tensor.shape)
            raise InputError(f"input {name!r} is {given}, but the engine was built for {spec.shape}; {fix}")
        if dtype is not spec.dtype:
            raise InputError(f"input {name!r} has dtype {dtype.value}, but the engine expects "
                             f"{spec.dtype.value}; convert it first (e.g. array.astype('{spec.dtype.value}'))")


def _check_memory(engine, limits: ResourceLimits) -> None:
    """Every input and activation of the engine, and its activation arena, within the budget."""
    plan = engine.plan
    for spec in plan.inputs:
        limits.check_tensor(f"engine input {spec.name!r}", spec.shape, spec.dtype)
    for spec in plan.tensors:
        limits.check_tensor(f"engine tensor {spec.name!r}", spec.shape, spec.dtype)
    limits.check_total("the engine's activations (its memory plan's arena)", engine.arena_nbytes)


def _numpy_input(name: str, value: Any, expected: DataType) -> tuple[torch.Tensor, DataType]:
    """A numpy array (or anything np.asarray takes) as a CPU tensor and its DataType, or an InputError that says
    what to pass instead."""
    fix = f"pass a numpy array of dtype {expected.value} (array.astype('{expected.value}'))"
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists, objects numpy cannot hold
        raise InputError(f"input {name!r} cannot be made an array ({error}); {fix}") from None
    if array.dtype.kind in "OUSVcMm" or array.dtype.hasobject:
        raise InputError(f"input {name!r} has numpy dtype {array.dtype} ({_kind_name(array.dtype)}), which an "
                         f"engine never takes; {fix}")
    try:
        dtype = DataType.from_numpy(array.dtype)
    except TypeError:
        raise InputError(f"input {name!r} has numpy dtype {array.dtype}, which tensorkiln does not support; "
                         f"{fix}") from None
    if not array.dtype.isnative:  # big-endian data (from a file written elsewhere): the same values, native order
        array = array.astype(array.dtype.newbyteorder("="))
    return to_torch(array), dtype


def _kind_name(dtype: np.dtype) -> str:
    return {"O": "Python objects", "U": "text", "S": "bytes", "V": "raw records", "c": "complex numbers",
            "M": "dates", "m": "time spans"}.get(dtype.kind, "not numbers")


def _same_memory(a: torch.Tensor | None, b: torch.Tensor) -> bool:
    """Whether a graph that reads `a` reads `b` too: the same address, strides and dtype."""
    return a is not None and (a.data_ptr(), a.stride(), a.dtype) == (b.data_ptr(), b.stride(), b.dtype)


def _converted(value: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """`value` in `buffer`'s dtype and layout: itself where they already match, else copied into `buffer`."""
    if value.dtype == buffer.dtype and value.stride() == buffer.stride():
        return value
    return buffer.copy_(value)


class _DeviceMemory:
    """Device memory described by the CUDA array interface: `torch.as_tensor` of it makes a tensor over that
    memory that does not own it (the caching allocator may hand the memory to other tensors)."""

    def __init__(self, pointer: int, nbytes: int):
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (pointer, False),
                                         "version": 3}


def _unowned_view(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor over `tensor`'s memory (same dtype, shape and strides) that does not keep that memory allocated."""
    storage = tensor.untyped_storage()
    if storage.nbytes() == 0:  # nothing to share (and no pointer to describe)
        return tensor
    raw = torch.as_tensor(_DeviceMemory(storage.data_ptr(), storage.nbytes()), device=tensor.device)
    return raw.view(tensor.dtype).as_strided(tensor.shape, tensor.stride(), tensor.storage_offset())


def _gpu_time(timings: list[float], runs: int, index: int, launch, args):
    timings.append(gpu_milliseconds(launch, runs) / 1e3)
    return launch()


def _wall_clock(timings: list[float], index: int, launch, args):
    start = time.perf_counter()
    results = launch()
    timings.append(time.perf_counter() - start)
    return results


@contextlib.contextmanager
def _float32_math(precision: str):
    """FP32 engines compute FP32 convolutions and matrix products in full precision; TF32 engines (and the
    FP32 layers of reduced-precision engines) may use TF32 tensor cores."""
    allow = precision != "fp32"
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _as_io_dtype(tensor: torch.Tensor, dtype: DataType) -> torch.Tensor:
    """An output as the caller gets it: its declared dtype, row-major. Channels-last engines compute 4-D
    activations NHWC; callers (and numpy, and whoever calls .view on the result) expect the standard layout."""
    tensor = tensor if tensor.dtype == dtype.torch else tensor.to(dtype.torch)
    return tensor.contiguous()


def _to_numpy(tensor: torch.Tensor):
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).contiguous().numpy()
