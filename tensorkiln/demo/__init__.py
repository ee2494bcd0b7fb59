"""The demo behind `kiln demo`: models that ship inside the package, built and run end to end.

    from tensorkiln.demo import DemoSettings, run_demo
    for report in run_demo(("lenet", "ultraface"), DemoSettings(device="cpu", iterations=20)):
        print(report.summary_rows())

Each model is imported from its bundled file, built into an engine (on the GPU when there is one, else on the
CPU), run on bundled data, and timed; the reports say what the build did, what the model found, and how it
compares with onnxruntime on the same machine where onnxruntime can read the model. The bundled files and their
licences are listed in tensorkiln/demo/data/README.md.
"""
from __future__ import annotations

import types
from typing import Iterator, Sequence

from .bundled import BUNDLED_MODELS, BundledModel, bundled_bytes
from .common import DEFAULT_ITERATIONS, DEVICES, DemoSettings, EngineRun, resolve_device
from .lenet import LenetReport, run_lenet
from .measure import Latency, Optimizations
from .ultraface import Face, UltrafaceReport, run_ultraface

DemoReport = LenetReport | UltrafaceReport
RUNNERS = types.MappingProxyType({"lenet": run_lenet, "ultraface": run_ultraface})  # the --model choices
MODEL_KEYS = tuple(RUNNERS)


def run_model(key: str, settings: DemoSettings) -> DemoReport:
    """Import, build, run and time one bundled model (a key of RUNNERS)."""
    if key not in RUNNERS:
        raise ValueError(f"unknown demo model {key!r}; the models are {list(RUNNERS)}")
    return RUNNERS[key](settings)


def run_demo(models: Sequence[str], settings: DemoSettings) -> Iterator[DemoReport]:
    """The report of each model in `models`, in order, each as soon as it is done."""
    for key in models:
        yield run_model(key, settings)


__all__ = ["BUNDLED_MODELS", "BundledModel", "DEFAULT_ITERATIONS", "DEVICES", "DemoReport", "DemoSettings",
           "EngineRun", "Face", "Latency", "LenetReport", "MODEL_KEYS", "Optimizations", "UltrafaceReport",
           "bundled_bytes", "resolve_device", "run_demo", "run_model"]
