"""Tactic timing on the target GPU, with a timing cache file that makes rebuilds skip it.

The cache key holds the tactic id, the layer's attributes, input shapes and dtypes, and the device name,
so a similar network (same layers at the same shapes) reuses the measurements of another.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Iterable

import torch

from ..cpu_threads import threads as thread_count
from ..ir.graph import Layer
from ..ir.serialize import op_to_json
from ..kernels.cpu.serial_layers import runs_on_one_thread
from ..kernels.registry import KernelEntry
from .selection import GENERATED_PREFIX, family, tactic_id


class TimingCache:
    def __init__(self, path: Path | None = None):
        self.path = path
        self.entries: dict[str, float] = {}
        self.hits = self.misses = 0
        if path is not None and Path(path).is_file():
            self.entries = json.loads(Path(path).read_text()).get("timings", {})

    def save(self) -> None:
        if self.path is not None:
            Path(self.path).write_text(json.dumps({"format": "tensorkiln-timing-cache", "version": 1,
                                                   "timings": self.entries}, indent=0, sort_keys=True))


def layer_key(layer: Layer, dtype: torch.dtype, device_name: str) -> str:
    inputs = [None if t is None else [list(t.shape), t.dtype.value, t.is_constant] for t in layer.inputs]
    return json.dumps([op_to_json(layer.op), inputs, str(dtype), device_name], sort_keys=True)


class TacticTimer:
    """Times every candidate of a layer on random inputs of its real shapes; keeps the fastest."""

    def __init__(self, device: torch.device, compute_dtype: torch.dtype, cache: TimingCache, runs: int = 20,
                 channels_last: bool = False):
        self.device, self.dtype, self.cache, self.runs = device, compute_dtype, cache, runs
        self.channels_last = channels_last
        self.device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        self.log: list[str] = []
        self.seconds: collections.Counter[str] = collections.Counter()  # build time spent timing, per kernel family
        self.ahead = (0, 0.0)  # (kernels launched, seconds) by compile_ahead

    def __call__(self, layer: Layer, entries: list[KernelEntry], in_place: bool = False) -> KernelEntry:
        """The fastest of `entries` for `layer`. With `in_place` the layer will store over its residual where its
        tactic can (plan/in_place.py), and such tactics are timed doing so."""
        times = {}
        timed_now = self._time_cpu_in_turns(layer, entries, in_place) if self.device.type == "cpu" else set()
        for entry in entries:
            timed, entry_key = self._timed(layer, entry, in_place)
            if entry_key in timed_now:
                self.cache.misses += 1
            elif entry_key in self.cache.entries:
                self.cache.hits += 1
            else:
                self.cache.misses += 1
                start = time.perf_counter()
                self.cache.entries[entry_key] = self._time(timed, entry)
                self.seconds[family(entry)] += time.perf_counter() - start
            times[tactic_id(entry)] = self.cache.entries[entry_key]
        best = min(entries, key=lambda e: times[tactic_id(e)])
        self.log.append(f"{layer.name}: " + ", ".join(f"{t} {ms * 1000:.1f} us" for t, ms in times.items())
                        + f" -> {tactic_id(best)}")
        return best

    def milliseconds(self, layer: Layer, entry: KernelEntry, in_place: bool = False) -> float:
        """What timing `entry` on `layer` measured (`__call__` has timed it, or the cache had it)."""
        return self.cache.entries[self._timed(layer, entry, in_place)[1]]

    def compile_ahead(self, work: Iterable[tuple[Layer, list[KernelEntry], bool]]) -> None:
        """Launch every generated (Triton) tactic that timing will meet once, several at a time, so that their
        compiles overlap: a compile spends most of its time in ptxas and the C compiler (subprocesses), which
        threads run side by side. `work`: (layer, its candidates, in_place) as `__call__` will get them."""
        jobs = {}
        for layer, entries, in_place in work:
            for entry in entries:
                timed, entry_key = self._timed(layer, entry, in_place)
                if entry.impl.startswith(GENERATED_PREFIX) and entry_key not in self.cache.entries:
                    jobs.setdefault(entry_key, (timed, entry))
        if not jobs:
            return
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda job: self._launch_once(*job), jobs.values()))
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the concurrent launches' inputs: up to 8 layers' worth, not needed again
        self.ahead = (len(jobs), time.perf_counter() - start)

    def _launch_once(self, layer: Layer, entry: KernelEntry) -> None:
        try:
            with torch.inference_mode():
                entry.fn(layer.op, self._inputs(layer))
        except Exception:  # noqa: BLE001 (Triton's compile errors have many types) the timer meets it again: inf
            pass

    def _timed(self, layer: Layer, entry: KernelEntry, in_place: bool) -> tuple[Layer, str]:
        """The layer as `entry` is timed (storing over its residual where it can and the plan lets it), and the
        timing cache's key."""
        timed = layer
        if in_place and entry.writes_over_residual:
            timed = dataclasses.replace(layer, op=dataclasses.replace(layer.op, residual_in_place=True))
        return timed, f"{tactic_id(entry)}|{layer_key(timed, self.dtype, self.device_name)}"

    def summary(self) -> str:
        """Where the timing's build time went: seconds per kernel family (its compiles and library searches too)."""
        spent = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.most_common())
        launched, compiling = self.ahead
        ahead = f"compiling {launched} generated tactics ahead took {compiling:.1f} s; " if launched else ""
        return ahead + f"tactic timing took {sum(self.seconds.values()):.1f} s" + (f": {spent}" if spent else "")

    def _inputs(self, layer: Layer) -> list[torch.Tensor | None]:
        args = []
        for tensor in layer.inputs:
            if tensor is None:
                args.append(None)
                continue
            if tensor.is_constant:
                value = torch.from_numpy(tensor.value.copy()).to(self.device)
            elif tensor.dtype.is_floating:
                value = torch.randn(tensor.shape, device=self.device)
            else:
                value = torch.zeros(tensor.shape, dtype=tensor.dtype.torch, device=self.device)
            if value.is_floating_point():
                value = value.to(self.dtype)
            if self.channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            args.append(value)
        return args

    def _time_cpu_in_turns(self, layer: Layer, entries: list[KernelEntry], in_place: bool) -> set[str]:
        """Time the CPU kernels among the candidates that the cache lacks in turns (one launch of each per round) on
        the thread count the static executor will run the layer on, and store their medians in the cache; the cache
        keys timed (other targets' kernels, and a single one to time, go through `_time`). A shared
        2-core machine is noisy in bursts: timed one after the other, a burst during one candidate's runs made it
        lose (MobileNetV2 built twice in a row: 12 of 55 layers chose differently, one engine 7% slower). A layer
        that will run on one thread is timed on one: on the context's two threads each launch paid the other
        thread's wake-up (about 80 us here)."""
        pending = [(entry, *self._timed(layer, entry, in_place)) for entry in entries if entry.target == "cpu"]
        pending = [(entry, timed, key) for entry, timed, key in pending if key not in self.cache.entries]
        if len(pending) < 2:
            return set()  # one candidate to time: `_time` as on the GPU
        start = time.perf_counter()
        serial = runs_on_one_thread(layer.op, [None if t is None else tuple(t.shape) for t in layer.inputs],
                                    [tuple(t.shape) for t in layer.outputs])
        with thread_count(1 if serial else None), torch.inference_mode():
            launches = {key: _cpu_launch(entry, timed, self._inputs(timed)) for entry, timed, key in pending}
            samples: dict[str, list[float]] = {key: [] for key in launches if launches[key] is not None}
            for _ in range(max(self.runs, 5)):
                for key in samples:
                    begin = time.perf_counter()
                    launches[key]()
                    samples[key].append(time.perf_counter() - begin)
        for key in launches:
            self.cache.entries[key] = statistics.median(samples[key]) * 1e3 if key in samples else float("inf")
        self.seconds[family(pending[0][0])] += time.perf_counter() - start
        return set(launches)

    def _time(self, layer: Layer, entry: KernelEntry) -> float:
        """Median milliseconds of one launch on the GPU (see `gpu_milliseconds`), or on the CPU's wall clock; inf
        when the tactic fails."""
        args = self._inputs(layer)
        measure = cpu_milliseconds if self.device.type == "cpu" else gpu_milliseconds
        try:
            with torch.inference_mode():
                return measure(lambda: entry.fn(layer.op, args), self.runs)
        except (RuntimeError, ValueError, NotImplementedError):
            return float("inf")


def _cpu_launch(entry: KernelEntry, layer: Layer, args: list):
    """`() -> None` launching `entry` on `layer` after two warm-up launches (the first packs a weight, picks a oneDNN
    primitive), or None where the tactic fails."""
    def launch():
        entry.fn(layer.op, args)

    try:
        for _ in range(2):
            launch()
    except (RuntimeError, ValueError, NotImplementedError):
        return None
    return launch


def cpu_milliseconds(launch, runs: int) -> float:
    """Median wall-clock milliseconds of one `launch()` on the CPU after two warm-up launches (the first packs a
    weight, picks a oneDNN primitive), over at least 5 timed launches: 2-core machines are shared and noisy."""
    for _ in range(2):
        launch()
    samples = []
    for _ in range(max(runs, 5)):
        start = time.perf_counter()
        launch()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


_GRAPH_REPEATS = 4  # launches per graph replay: amortizes the replay's own launch


def gpu_milliseconds(launch, runs: int) -> float:
    """Median milliseconds that one `launch()` takes on the GPU inside a CUDA graph, after warm-up.

    Engines replay a CUDA graph, where a kernel costs its GPU time and no Python launch overhead. Timing one eager
    call would instead charge each kernel its launch cost (tens of microseconds for a Triton launcher, a few for
    an ATen op), and on small layers measure that. So `launch` is captured `_GRAPH_REPEATS` times in one graph
    and the replays are timed with CUDA events; what cannot be captured is timed eagerly.
    """
    graph = torch.cuda.CUDAGraph()
    capture = torch.cuda.graph(graph)
    capture.capture_stream.wait_stream(torch.cuda.current_stream())  # `launch`'s inputs may still be in flight
    with torch.cuda.stream(capture.capture_stream):  # the capture's stream: one cuBLAS workspace for both
        for _ in range(3):  # warm-up: Triton compiles, cuDNN picks its algorithm
            launch()
    torch.cuda.synchronize()
    run, launches = _captured(launch, graph, capture)
    samples = []
    for _ in range(max(runs, 1)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / launches)
    return statistics.median(samples)


def _captured(launch, graph: torch.cuda.CUDAGraph, capture: torch.cuda.graph) -> tuple:
    """(a callable that replays `launch` captured `_GRAPH_REPEATS` times in `graph`, that count), or (`launch`, 1)
    when it cannot be captured."""
    try:
        with capture:
            for _ in range(_GRAPH_REPEATS):
                launch()
    except RuntimeError:
        torch.cuda.synchronize()
        return launch, 1
    graph.replay()  # the first replay uploads the graph
    return graph.replay, _GRAPH_REPEATS
