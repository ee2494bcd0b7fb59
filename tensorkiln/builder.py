"""Builder and BuilderConfig: Network -> optimized Network -> Plan -> Engine."""
from __future__ import annotations

import dataclasses
import enum
import logging
import time
from pathlib import Path

import torch

from .errors import BuildError
from .ir import verify
from .ir.graph import Network
from .network import NetworkDefinition
from .passes.manager import DEFAULT_PIPELINE, PassManager, PassRecord
from .plan import Plan, Step, TensorSpec
from .plan.memory import plan_memory
from .runtime.engine import Engine
from .tactics.selection import select_tactic

log = logging.getLogger("tensorkiln.builder")


class Target(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"


@dataclasses.dataclass(frozen=True)
class BuilderConfig:
    target: Target = Target.CPU
    passes: tuple[str, ...] = DEFAULT_PIPELINE
    debug: bool = False  # verify IR invariants after every pass
    dump_dir: Path | None = None  # write the network after every pass
    verbose: bool = False


class Builder:
    def __init__(self, config: BuilderConfig | None = None):
        self.config = config or BuilderConfig()
        self.build_log: list[str] = []

    def build(self, network: NetworkDefinition | Network) -> Engine:
        """Optimize and lower `network` (which is rewritten in place) into an engine."""
        graph = network.ir if isinstance(network, NetworkDefinition) else network
        if not graph.outputs:
            raise BuildError(f"network {graph.name!r} has no outputs; call network.mark_output(tensor)")
        start = time.perf_counter()
        verify(graph)
        layers_before = len(graph.layers)
        manager = PassManager(self.config.passes, debug=self.config.debug, dump_dir=self.config.dump_dir,
                              on_pass=self._log_pass)
        manager.run(graph)
        plan, weights = self._lower(graph, manager, layers_before)
        seconds = time.perf_counter() - start
        self._say(f"built {graph.name!r}: {layers_before} layers -> {len(plan.steps)} steps in {seconds:.2f} s")
        plan = dataclasses.replace(plan, build_info={**plan.build_info, "build_seconds": round(seconds, 3)})
        return Engine(plan, weights)

    def _lower(self, graph: Network, manager: PassManager, layers_before: int):
        target = self.config.target.value
        steps, tensors = [], []
        weights: dict[str, torch.Tensor] = {}
        weight_specs: list[TensorSpec] = []

        def keep_weight(tensor) -> None:
            if tensor.name not in weights:
                weights[tensor.name] = torch.from_numpy(tensor.value.copy())
                weight_specs.append(_spec(tensor))

        for layer in graph.layers:
            for tensor in layer.inputs:
                if tensor is not None and tensor.is_constant:
                    keep_weight(tensor)
            steps.append(Step(layer.name, layer.op, tuple(None if t is None else t.name for t in layer.inputs),
                              tuple(t.name for t in layer.outputs), select_tactic(layer, target)))
            tensors.extend(_spec(t) for t in layer.outputs)
        for tensor in graph.outputs:
            if tensor.is_constant:
                keep_weight(tensor)
        build_info = {"layers_before": layers_before, "pass_counts": manager.counts(),
                      "passes": [{"name": r.name, "seconds": round(r.seconds, 4), "counts": r.counts}
                                 for r in manager.records]}
        memory = plan_memory(steps, tensors, outside={t.name for t in graph.outputs})
        self._say(f"activation memory: arena {memory.arena_bytes / 2**20:.2f} MiB for "
                  f"{memory.activation_bytes / 2**20:.2f} MiB of activations "
                  f"({100 * memory.arena_bytes / max(memory.activation_bytes, 1):.0f}%)")
        plan = Plan(graph.name, target, tuple(_spec(t) for t in graph.inputs), tuple(_spec(t) for t in graph.outputs),
                    tuple(tensors), tuple(steps), tuple(weight_specs), build_info=build_info, memory=memory)
        return plan, weights

    def _log_pass(self, record: PassRecord) -> None:
        counts = ", ".join(f"{k}={v}" for k, v in record.counts.items()) or "no change"
        self._say(f"pass {record.name}: {counts} ({record.seconds * 1000:.1f} ms, {record.layers_after} layers)")
        for line in record.log:
            self._say(f"  {line}", detail=True)

    def _say(self, line: str, detail: bool = False) -> None:
        self.build_log.append(line)
        (log.debug if detail else log.info)(line)


def _spec(tensor) -> TensorSpec:
    return TensorSpec(tensor.name, tensor.dtype, tensor.shape, tensor.dim_names)
