"""Builder and BuilderConfig: Network -> optimized Network -> Plan -> Engine."""
from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import time
from pathlib import Path

import torch

from .errors import BuildError
from .ir import verify
from .ir.graph import Layer, Network
from .limits import ResourceLimits, enforced, format_bytes
from .network import NetworkDefinition
from .passes.manager import DEFAULT_PIPELINE, PassManager, PassRecord
from .plan import Plan, Step, TensorSpec
from .plan.in_place import residual_in_place_candidates, residuals_in_place
from .plan.memory import plan_memory
from .plan.refit_record import RECORD_KEY as REFIT_RECORD_KEY
from .plan.refit_record import make_record, model_weight_sources
from .plan.schema import PlanProblem, plan_from_json
from .plan.validate import validate_plan
from .quant.int8 import Int8Options, explicit_quantization_layers, quantize_network
from .quant.precision import Precision, assign_precisions
from .progress import progress_bar
from .quant.recorded import RecordingCalibrator
from .runtime.engine import Engine
from .tactics.selection import TACTIC_SOURCES, select_tactic, timed_candidates
from .tactics.timing import TacticTimer, TimingCache
from .weight_sharing import WeightCache, sharing

log = logging.getLogger("tensorkiln.builder")

_REDUCED_DTYPES = {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


class Target(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"


@dataclasses.dataclass(frozen=True)
class BuilderConfig:
    target: Target = Target.CPU
    precision: Precision = Precision.FP32
    layer_precisions: tuple[tuple[str, Precision], ...] = ()  # per-layer overrides: (layer name, precision)
    opt_level: int = 3  # 0: first candidate; 1: time library tactics; 2: + one config of each generated kernel;
    #                     3..5: every config (and more timing runs per candidate)
    timing_cache: Path | None = None  # read before the build and written after it
    # tactic sources the build must not use (tactics/selection.py TACTIC_SOURCES: torch, cudnn, cublaslt, triton),
    # like TensorRT's tactic sources: to compare libraries, or to avoid one
    disabled_tactic_sources: tuple[str, ...] = ()
    passes: tuple[str, ...] = DEFAULT_PIPELINE
    debug: bool = False  # verify IR invariants after every pass
    dump_dir: Path | None = None  # write the network after every pass
    verbose: bool = False
    # the memory budget: the network's constants, the engine's weights and activation arena (together) and each
    # tensor the passes make must fit (tensorkiln.limits; default: half the machine's memory, at most 32 GiB)
    limits: ResourceLimits = dataclasses.field(default_factory=ResourceLimits)
    int8: Int8Options | None = None  # precision INT8: the calibrator (data or cache) and the accuracy tools
    # (layer name, tactic id): the tactic to take for that layer where it is one of its candidates, untimed. An engine
    # with optimization profiles specializes new shapes with the tactics its opt shape was tuned to (runtime/profiles)
    tactic_hints: tuple[tuple[str, str], ...] = ()


class Builder:
    def __init__(self, config: BuilderConfig | None = None, weight_cache: WeightCache | None = None):
        self.config = config or BuilderConfig()
        self.build_log: list[str] = []
        # engines of one model at several shapes share their weights through it (weight_sharing.py)
        self.weight_cache = weight_cache

    def build(self, network: NetworkDefinition | Network) -> Engine:
        """Optimize and lower `network` (which is rewritten in place) into an engine."""
        graph = network.ir if isinstance(network, NetworkDefinition) else network
        if not graph.outputs:
            raise BuildError(f"network {graph.name!r} has no outputs; call network.mark_output(tensor)")
        self._check_config()
        start = time.perf_counter()
        verify(graph)
        layers_before = len(graph.layers)
        sources, model_weights = model_weight_sources(graph)  # before the passes fold them (the refit record)
        manager = PassManager(self.config.passes, debug=self.config.debug, dump_dir=self.config.dump_dir,
                              on_pass=self._log_pass)
        int8 = self.config.precision is Precision.INT8
        explicit = explicit_quantization_layers(graph) if int8 else 0  # before fold_qdq rewrites the Q/DQ pairs
        # the passes' rewrites evaluate constant layers: under the same budget; the constants they derive from the
        # model's are shared with the model's other engines where the build shares weights (weight_sharing.py)
        with enforced(self.config.limits), sharing(self.weight_cache):
            manager.run(graph)
        _check_layer_precisions(graph, self.config.layer_precisions)
        options, recording = self.config.int8, None
        if int8 and options is not None and options.calibrator is not None:  # a refit reuses the scales it gives
            recording = RecordingCalibrator(options.calibrator)
            options = dataclasses.replace(options, calibrator=recording)
        if int8:  # after the passes: the folded, fused layers are quantized (but for those given a float precision)
            kept = tuple(name for name, _ in self.config.layer_precisions)
            manager.records.append(quantize_network(graph, options, self._say, self._device, explicit, kept))
            self._log_pass(manager.records[-1])
        plan, weights = self._lower(graph, manager, layers_before, explicit_qdq=bool(explicit))
        seconds = time.perf_counter() - start
        self._say(f"built {graph.name!r}: {layers_before} layers -> {len(plan.steps)} steps in {seconds:.2f} s")
        record = make_record(plan, sources, model_weights, self._refit_config(),
                             recording and recording.cache,
                             options.keep_float if int8 and options is not None else 0)
        plan = dataclasses.replace(plan, build_info={**plan.build_info, "build_seconds": round(seconds, 3),
                                                     REFIT_RECORD_KEY: record})
        _check_loadable(plan, graph.name)
        return Engine(plan, weights)

    def _refit_config(self) -> dict:
        """The settings a refit builds with again (the plan holds the target and precision; tactics are hinted)."""
        return {"passes": list(self.config.passes),
                "layer_precisions": [[name, precision.value] for name, precision in self.config.layer_precisions]}

    def _check_config(self) -> None:
        config = self.config
        if config.target is Target.CUDA and not torch.cuda.is_available():
            raise BuildError("the CUDA target needs a CUDA device, and this machine has none; build for the CPU")
        unknown = sorted(set(config.disabled_tactic_sources) - set(TACTIC_SOURCES))
        if unknown:
            raise BuildError(f"unknown tactic sources {unknown}; the sources are {', '.join(TACTIC_SOURCES)}")
        if config.target is Target.CPU and config.precision not in (Precision.FP32, Precision.INT8):
            raise BuildError(f"{config.precision.value} engines are not supported on the CPU target yet; "
                             "build FP32 engines for the CPU, or use the CUDA target")

    @property
    def _device(self) -> torch.device:
        return torch.device(self.config.target.value)

    def _lower(self, graph: Network, manager: PassManager, layers_before: int, explicit_qdq: bool = False):
        config, target = self.config, self.config.target.value
        hints = dict(config.tactic_hints)
        overrides, precision_log = assign_precisions(graph, self._float_precision, config.layer_precisions,
                                                     self._device)
        for line in precision_log:
            self._say(line)
        # NHWC activations and weights wherever the network convolves, on both targets: the CUDA kernels are written
        # for it, and on the CPU the fused convolutions then run through oneDNN with packed weights. Measured on 2
        # cores (bench/cpu_layouts.py, bench/cpu_resnet50.py): NHWC takes 0.70-0.84x the NCHW time on ResNet-50,
        # UltraFace, CenterFace and PP-OCR (with or without many depthwise convolutions) and ties on the tiny MTCNN
        # nets; no model was slower, so there is no exception (e.g. for depthwise-heavy networks).
        channels_last = any(l.kind.endswith("convolution") for l in graph.layers)
        weight_bytes = _check_weights(graph, config.limits)  # before the engine copies them
        timer, cache = self._timer(channels_last)
        steps, tensors = [], []
        weights: dict[str, torch.Tensor] = {}
        weight_specs: list[TensorSpec] = []
        # an INT8 engine's steps on a GPU compute in FP16 (the plan's precision says int8; the runtime casts each
        # step's floating inputs to its step precision)
        step_precision = Precision.FP16.value if self._float_precision is not config.precision else ""
        for layer in graph.layers:
            reduced = self._reduced_dtype(layer, overrides)
            for tensor in layer.inputs:
                if tensor is not None and tensor.is_constant and tensor.name not in weights:
                    weights[tensor.name] = self._engine_weight(tensor, reduced)
                    weight_specs.append(_spec(tensor, weights[tensor.name].dtype))
            steps.append(Step(layer.name, layer.op, tuple(None if t is None else t.name for t in layer.inputs),
                              tuple(t.name for t in layer.outputs), "",
                              tuple(getattr(layer, "fused_from", ())), overrides.get(layer.name, step_precision)))
            tensors.extend(_spec(t, reduced if reduced is not None and t.dtype.is_floating else None)
                           for t in layer.outputs)
        outside = {t.name for t in graph.outputs}
        # the layers that will store over their residual if their tactic can: the timer times such tactics that way
        # (for cuBLAS it is one GEMM accumulating into the residual instead of a GEMM and an add)
        may_store = residual_in_place_candidates(steps, tensors, outside)
        candidates = [_hinted(timed_candidates(layer, target, config.opt_level, config.disabled_tactic_sources),
                              hints.get(layer.name)) for layer in graph.layers]
        links = self._integer_links(graph, timer, may_store, explicit_qdq)  # INT8 builds (int8_links.py), else None
        if timer is not None:
            timer.compile_ahead(work for layer, found in zip(graph.layers, candidates) if len(found) > 1
                                for work in (links.timing_work(layer, found) if links else
                                             [(layer, found, layer.name in may_store)]))
        timed = sum(len(found) > 1 for found in candidates) if timer is not None else 0
        with progress_bar(f"timing tactics of {timed} layers", timed, enabled=timed > 0) as advance:
            for index, (layer, found) in enumerate(zip(graph.layers, candidates)):
                layer_timer = (links and links.layer_timer(layer)) or (
                    timer and functools.partial(timer, in_place=layer.name in may_store))
                tactic = select_tactic(layer, target, layer_timer, found=found)
                steps[index] = dataclasses.replace(steps[index], tactic=tactic)
                advance(int(len(found) > 1))
        if links:
            links.settle(steps, tensors, candidates, weights, outside)
        for tensor in graph.outputs:
            if tensor.is_constant and tensor.name not in weights:
                weights[tensor.name] = _weight(tensor, None)
                weight_specs.append(_spec(tensor))
        if cache is not None:
            cache.save()
            self._say(f"timing cache: {cache.hits} hits, {cache.misses} tactics timed")
            self._say(timer.summary())
            for line in timer.log:  # each layer's candidates and their times, as trtexec --verbose lists them
                self._say(f"  {line}", detail=True)
        if links:
            steps, tensors, may_store = links.link(steps, tensors, weights, outside, may_store)
        steps = residuals_in_place(steps, may_store)
        in_place = sum(getattr(s.op, "residual_in_place", False) for s in steps)
        if in_place:
            self._say(f"residual adds in place: {in_place} layers store their output over their residual input")
        memory = plan_memory(steps, tensors, outside)
        config.limits.check_total(f"the engine's weights ({format_bytes(weight_bytes)}) and activation arena "
                                  f"({format_bytes(memory.arena_bytes)})", weight_bytes + memory.arena_bytes)
        self._say(f"activation memory: arena {memory.arena_bytes / 2**20:.2f} MiB for "
                  f"{memory.activation_bytes / 2**20:.2f} MiB of activations "
                  f"({100 * memory.arena_bytes / max(memory.activation_bytes, 1):.0f}%)")
        build_info = {"layers_before": layers_before, "pass_counts": manager.counts(), "channels_last": channels_last,
                      "passes": [{"name": r.name, "seconds": round(r.seconds, 4), "counts": r.counts}
                                 for r in manager.records]}
        device_name, capability = "", ""
        if target == "cuda":
            device_name = torch.cuda.get_device_name()
            capability = "%d.%d" % torch.cuda.get_device_capability()
        plan = Plan(graph.name, target, tuple(_spec(t) for t in graph.inputs), tuple(_spec(t) for t in graph.outputs),
                    tuple(tensors), tuple(steps), tuple(weight_specs), config.precision.value, device_name, capability,
                    build_info, memory)
        return plan, weights

    def _engine_weight(self, tensor, reduced: torch.dtype | None) -> torch.Tensor:
        if self.weight_cache is None:
            return _weight(tensor, reduced)
        return self.weight_cache.engine_weight(tensor, reduced, lambda: _weight(tensor, reduced))

    @property
    def _links_integer_layers(self) -> bool:
        """INT8 builds have integer kernels (both targets), and link the layers that choose them (plan/integer_links.py)."""
        return self.config.precision is Precision.INT8

    def _integer_links(self, graph: Network, timer: TacticTimer | None, may_store: set[str], explicit_qdq: bool):
        """The INT8 links of an INT8 build (int8_links.py); None for other builds."""
        if not self._links_integer_layers:
            return None
        from .int8_links import IntegerLinks

        # a GPU's mixed precision: a quantized layer on a float kernel computes in FP16 unquantized (not on the CPU,
        # whose float kernels keep the simulated INT8 numerics: the reference)
        strict = (self.config.int8 is not None and self.config.int8.strict) or self.config.target is Target.CPU
        return IntegerLinks(graph, timer, may_store, self._say, calibrated=not explicit_qdq and not strict)

    def _reduced_dtype(self, layer: Layer, overrides: dict[str, str]) -> torch.dtype | None:
        if layer.name in overrides:
            return None if overrides[layer.name] in ("fp32", "tf32") else _REDUCED_DTYPES[Precision(overrides[layer.name])]
        return _REDUCED_DTYPES.get(self._float_precision)

    @property
    def _float_precision(self) -> Precision:
        """The precision of the layers computed in float: an INT8 engine on a GPU runs those in FP16 (TensorRT's
        mixed INT8/FP16: its unquantized layers and float tactics), on the CPU in FP32."""
        int8_gpu = self.config.precision is Precision.INT8 and self.config.target is Target.CUDA
        return Precision.FP16 if int8_gpu else self.config.precision

    def _timer(self, channels_last: bool) -> tuple[TacticTimer | None, TimingCache | None]:
        if self.config.opt_level == 0:  # (CPU builds time only the layers with several CPU tactics: convolutions)
            return None, None
        cache = TimingCache(self.config.timing_cache)
        dtype = _REDUCED_DTYPES.get(self._float_precision, torch.float32)
        timer = TacticTimer(self._device, dtype, cache, runs=2 + 2 * self.config.opt_level, channels_last=channels_last)
        return timer, cache

    def _log_pass(self, record: PassRecord) -> None:
        counts = ", ".join(f"{k}={v}" for k, v in record.counts.items()) or "no change"
        self._say(f"pass {record.name}: {counts} ({record.seconds * 1000:.1f} ms, {record.layers_after} layers)")
        for line in record.log:
            self._say(f"  {line}", detail=True)

    def _say(self, line: str, detail: bool = False) -> None:
        self.build_log.append(line)
        (log.debug if detail else log.info)(line)


def _hinted(candidates: list, hint: str | None) -> list:
    """The hinted tactic alone where it is a candidate (nothing to time), else all the candidates."""
    from .tactics.selection import tactic_id

    chosen = [entry for entry in candidates if hint is not None and tactic_id(entry) == hint]
    return chosen or candidates


def _check_loadable(plan: Plan, network_name: str) -> None:
    """The plan goes through the same validation as an engine file being loaded: the builder never hands out an
    engine that Runtime().load would refuse (a model can ask for what the importers accept but no engine may hold,
    e.g. a pooling window whose padded input needs terabytes)."""
    try:  # as the loader reads it: through JSON (an importer's attributes may be lists where the file has tuples)
        validate_plan(plan_from_json(json.loads(json.dumps(plan.to_json()))), on_this_machine=False)
    except PlanProblem as problem:
        raise BuildError(f"network {network_name!r} cannot become an engine: {problem}") from None


def _check_layer_precisions(graph: Network, overrides) -> None:
    """Per-layer precisions name layers of the optimized network: a name it lacks would silently do nothing."""
    names = {layer.name for layer in graph.layers}
    unknown = [name for name, _ in overrides if name not in names]
    if unknown:
        raise BuildError(f"layer precisions name {len(unknown)} layers the optimized network {graph.name!r} does not "
                         f"have ({', '.join(map(repr, unknown[:3]))}{', ...' if len(unknown) > 3 else ''}); name "
                         "layers as the engine's steps are named (kiln inspect ENGINE --layers)")


def _check_weights(graph: Network, limits: ResourceLimits) -> int:
    """The bytes of the constants the engine will hold (at their network dtype: reduced precision only shrinks
    them), checked against the budget before they are copied."""
    constants = {id(t): t for layer in graph.layers for t in layer.inputs if t is not None and t.is_constant}
    constants.update((id(t), t) for t in graph.outputs if t.is_constant)
    total = sum(t.value.nbytes for t in constants.values())
    limits.check_total(f"the engine's weights ({len(constants)} tensors)", total)
    return total


def _weight(tensor, reduced: torch.dtype | None) -> torch.Tensor:
    import numpy as np

    from .ir.dtypes import DataType

    array = np.asarray(tensor.value).copy()  # C-contiguous, and the engine never shares the network's memory
    if tensor.dtype is DataType.BF16:
        # numpy has no bfloat16: onnx hands these over as ml_dtypes.bfloat16 (or raw uint16 bits), which
        # torch.from_numpy rejects. The two bytes are the bfloat16 bits either way: reinterpret them, exactly.
        value = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        value = torch.from_numpy(array)
    return value.to(reduced) if reduced is not None and value.is_floating_point() else value


def _spec(tensor, dtype: torch.dtype | None = None) -> TensorSpec:
    from .ir.dtypes import DataType

    data_type = tensor.dtype if dtype is None else DataType.from_torch(dtype)
    return TensorSpec(tensor.name, data_type, tensor.shape, tensor.dim_names)
