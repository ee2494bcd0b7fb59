"""Pass contract, registry and the PassManager that runs, times, counts, verifies and dumps passes."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import time
from pathlib import Path
from typing import Callable, ClassVar

from ..ir import format_network, verify
from ..ir.graph import Network

PASSES: dict[str, type["Pass"]] = {}


def register_pass(cls: type["Pass"]) -> type["Pass"]:
    if cls.name in PASSES:
        raise ValueError(f"pass {cls.name!r} is registered twice")
    PASSES[cls.name] = cls
    return cls


class Pass:
    """A graph rewrite. `run` returns whether it changed the network and counts rewrites in `self.counts`."""
    name: ClassVar[str]

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.log: list[str] = []

    def count(self, rewrite: str, n: int = 1) -> None:
        self.counts[rewrite] = self.counts.get(rewrite, 0) + n

    def run(self, network: Network) -> bool:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class PassRecord:
    name: str
    seconds: float
    changed: bool
    counts: dict[str, int]
    log: tuple[str, ...]
    layers_after: int


# The order in which the builder runs the passes (each name is a registered Pass). Pattern recognition comes
# before fusion, layer_norm before rms_norm (the tail of a layer norm is an RMS norm of the centered input);
# fuse_horizontal comes before any vertical fusion, since it merges a sibling's bias Add and activation with it
# and leaves a wide layer -> bias -> activation chain to fuse; eliminate_concat marks concatenations last,
# when their producers are final. remove_noops and merge_shuffles clean up first, so that no identity or split
# shuffle hides a pattern; fold_scale folds BatchNorm and per-channel Mul/Add into weights before fusion (after
# recognition, which matches the Mul/Add of a GELU or a norm before they could be mistaken for a scale); fold_qdq
# right before it, to take a quantize/dequantize pair from between a convolution and its BatchNorm.
# forward_residual_bias and hoist_residual_bias work on the fused layers fuse_vertical leaves (their residual adds
# inside them); fuse_matmul_layer_norm after them (hoist_residual_bias needs the LayerNorm as a layer of its own),
# fuse_add_layer_norm after it (norms no GEMM took) and before fuse_pointwise (which would take the adds).
# unflatten_gemm runs before everything that fuses around a matrix product (passes/unflatten_gemm.py).
PIPELINE_ORDER = ("fold_constants", "remove_noops", "remove_identity_gather", "merge_shuffles", "unflatten_gemm",
                  "recognize_layer_norm", "recognize_rms_norm", "recognize_gelu", "approximate_gelu",
                  "recognize_attention", "fold_qdq", "fold_scale", "fuse_horizontal", "fuse_vertical",
                  "forward_residual_bias", "hoist_residual_bias", "fuse_matmul_layer_norm", "fuse_add_layer_norm",
                  "fuse_pointwise", "eliminate_concat", "remove_dead_layers")
# Passes that run only on request (BuilderConfig.passes, `kiln build --passes=+NAME`): those that trade accuracy for
# speed (approximate_gelu changes outputs by up to 2e-4), and new passes whose gain a GPU run has yet to show.
OPT_IN_PASSES: tuple[str, ...] = ("approximate_gelu",)
DEFAULT_PIPELINE = tuple(name for name in PIPELINE_ORDER if name not in OPT_IN_PASSES)


def pipeline_with(changes: str) -> tuple[str, ...]:
    """The default pipeline with passes added (+NAME) or left out (-NAME): `+forward_residual_bias,-fuse_horizontal`.
    Passes keep the order of PIPELINE_ORDER."""
    chosen = set(DEFAULT_PIPELINE)
    for item in filter(None, (part.strip() for part in changes.split(","))):
        sign, name = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
        if name not in PIPELINE_ORDER:
            raise ValueError(f"unknown pass {name!r} in {changes!r}; the passes are {', '.join(PIPELINE_ORDER)}")
        (chosen.add if sign == "+" else chosen.discard)(name)
    return tuple(name for name in PIPELINE_ORDER if name in chosen)


def _load_builtin() -> None:
    """Import every pass module of this package (each registers its passes)."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("manager", "pattern"):
            importlib.import_module(f"{__package__}.{module.name}")


class PassManager:
    """Runs passes in order. `debug` verifies the IR after each; `dump_dir` writes it after each."""

    def __init__(self, pipeline=DEFAULT_PIPELINE, debug: bool = False, dump_dir: Path | None = None,
                 on_pass: Callable[[PassRecord], None] | None = None):
        _load_builtin()
        unknown = [p for p in pipeline if p not in PASSES]
        if unknown:
            raise ValueError(f"unknown passes {unknown}; known: {sorted(PASSES)}")
        self.pipeline = tuple(pipeline)
        self.debug = debug
        self.dump_dir = dump_dir
        self.on_pass = on_pass
        self.records: list[PassRecord] = []

    def run(self, network: Network) -> Network:
        for index, name in enumerate(self.pipeline):
            instance = PASSES[name]()
            start = time.perf_counter()
            changed = instance.run(network)
            record = PassRecord(name, time.perf_counter() - start, changed, dict(instance.counts),
                                tuple(instance.log), len(network.layers))
            self.records.append(record)
            if self.debug:
                verify(network)
            if self.dump_dir is not None:
                self.dump_dir.mkdir(parents=True, exist_ok=True)
                (self.dump_dir / f"{index:02d}_{name}.txt").write_text(format_network(network))
            if self.on_pass:
                self.on_pass(record)
        return network

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for record in self.records:
            for key, n in record.counts.items():
                total[f"{record.name}.{key}"] = total.get(f"{record.name}.{key}", 0) + n
        return total
