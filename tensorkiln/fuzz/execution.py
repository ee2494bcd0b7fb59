"""Running an engine the way a user does, with the two checks the fuzzer adds to "did it raise":

- the outputs must be the ones the engine declares (names, dtypes, ranks, static sizes): a plan that lies about
  them is a silent wrong result, so a disagreement is a finding (MISMATCH), not a success;
- an engine the builder just made must load again from its own bytes (a reader that refuses the writer's files
  is as broken as one that accepts everything).

What the harness itself allocates is bounded: an engine declaring a 10^12-element input is not fed (SKIPPED);
refusing such an engine at load time is the library's job, and the summary counts how often it did not.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .case import HarnessSkip, OutputMismatch

MAX_FEED_ELEMENTS = 1 << 22  # 16 MB of float32 over all inputs of one case
DYNAMIC_DIM_SIZES = (1, 2, 3)


@dataclasses.dataclass
class CaseRun:
    """Per-case state shared by a target's run function and the worker: a scratch folder, and the last stage
    the case reached (load, parse, build, reload, context, feed, execute, check), which the summary counts."""
    scratch: Path
    stage: str = "start"


def random_feed(specs: Sequence[Any], seed: int, as_torch: bool) -> dict[str, Any]:
    """Random inputs of the declared specs (dynamic dims get small sizes): numpy arrays, or torch tensors."""
    import torch

    rng = np.random.default_rng(seed)
    shapes = {spec.name: tuple(d if d >= 0 else int(rng.choice(DYNAMIC_DIM_SIZES)) for d in spec.shape)
              for spec in specs}
    total = sum(int(np.prod(shape, dtype=object)) for shape in shapes.values())
    if total > MAX_FEED_ELEMENTS:
        raise HarnessSkip(f"the engine declares inputs of {total} elements; the harness feeds at most "
                          f"{MAX_FEED_ELEMENTS}")
    feed = {}
    for spec in specs:
        shape, dtype = shapes[spec.name], spec.dtype
        if dtype.is_floating:
            values = rng.standard_normal(shape)
        elif dtype.value == "bool":
            values = rng.integers(0, 2, shape).astype(bool)
        else:  # small non-negative integers: valid indices, sizes and token ids for the seeds' int inputs
            values = rng.integers(0, 3, shape)
        tensor = torch.from_numpy(np.asarray(values)).to(dtype.torch)
        feed[spec.name] = tensor if as_torch or dtype.value == "bfloat16" else tensor.numpy()
    return feed


def check_outputs(specs: Sequence[Any], outputs: Mapping[str, Any]) -> None:
    """Raise OutputMismatch where the outputs are not the declared ones."""
    import torch

    from ..ir.dtypes import DataType

    declared = {spec.name: spec for spec in specs}
    if set(outputs) != set(declared):
        raise OutputMismatch("names", f"outputs {sorted(outputs)} returned, {sorted(declared)} declared")
    for name, value in outputs.items():
        spec = declared[name]
        try:
            dtype = DataType.from_torch(value.dtype) if isinstance(value, torch.Tensor) else \
                DataType.from_numpy(value.dtype)
        except (TypeError, AttributeError):
            message = f"output {name!r} is a {type(value).__name__} of an unsupported dtype"
            raise OutputMismatch("dtype", message) from None
        if dtype.value == "float32" and spec.dtype.value == "bfloat16" and not isinstance(value, torch.Tensor):
            dtype = spec.dtype  # numpy has no bfloat16: execute() returns such outputs as float32 by design
        shape = tuple(value.shape)
        static_match = len(shape) == len(spec.shape) and all(d < 0 or d == s for d, s in zip(spec.shape, shape))
        if dtype is not spec.dtype or not static_match:
            raise OutputMismatch("dtype" if dtype is not spec.dtype else "shape",
                                 f"output {name!r} is {dtype.value} {shape}, declared {spec.dtype.value} "
                                 f"{tuple(spec.shape)}")


def check_declared(engine: Any) -> None:
    """An engine that loaded must declare well-formed inputs and outputs: names, DataTypes, int sizes >= -1.
    Anything else got past the reader's validation (and would break every caller, not only this harness)."""
    from ..ir.dtypes import DataType

    for spec in (*engine.inputs, *engine.outputs):
        shape = getattr(spec, "shape", None)
        well_formed = (isinstance(spec.name, str) and isinstance(spec.dtype, DataType) and isinstance(shape, tuple)
                       and all(type(d) is int and d >= -1 for d in shape))
        if not well_formed:
            raise OutputMismatch("declared", f"the engine loaded with the I/O spec {spec!r}"[:300])


def run_engine(engine: Any, run: CaseRun, seed: int, arena: bool = False, as_torch: bool = False
               ) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Make a context, feed random inputs of the declared specs, execute, check the outputs; returns the
    inputs and the outputs (for a comparison with a reference)."""
    check_declared(engine)
    run.stage = "context"
    context = engine.create_execution_context(use_arena=arena)
    run.stage = "feed"
    feed = random_feed(engine.inputs, seed, as_torch)
    run.stage = "execute"
    outputs = context.execute(feed)
    run.stage = "check"
    check_outputs(engine.outputs, outputs)
    return feed, outputs


def reload(engine: Any, run: CaseRun) -> Any:
    """The engine written to bytes and read back, as `kiln build` then `kiln run` would."""
    from ..errors import EngineFormatError
    from ..runtime import Runtime

    run.stage = "reload"
    blob = engine.serialize()
    try:
        return Runtime().deserialize(blob)
    except EngineFormatError as error:
        raise OutputMismatch(f"reload:{_gist(str(error))}", f"a freshly built engine does not load: {error}") from None


def _gist(message: str) -> str:
    """What kind of refusal a message is, without its names and numbers: the loader's different complaints
    about a builder's engines are different findings, the same complaint about other tensors is one."""
    text = re.sub(r"'[^']*'", "'_'", message.split(":", 1)[-1])
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", text).strip()[:60]
