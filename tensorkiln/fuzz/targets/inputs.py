"""Run-time inputs as callers get them wrong: wrong shapes and ranks, every dtype numpy and torch have (uint16,
complex, object, strings, big-endian, datetimes, structured), NaN and infinities, non-contiguous and read-only
arrays, Python lists and scalars, torch tensors on the meta device or needing grad, and containers that are not
a mapping of names (a bare array, a list, a tuple, None, extra and missing names, non-string keys), fed to
good engines through `execute`. A case is a JSON recipe, so a finding replays exactly.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from ..case import Case, HarnessSkip
from ..choices import Choices
from ..execution import CaseRun, check_outputs
from ..seeds import SeedBundle
from . import fuzz_target

NUMPY_DTYPES = ("float32", "float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                "int64", "uint64", "bool", "complex64", "complex128", "object", "<U3", "S3", ">f4", ">i8",
                "datetime64[s]", "V4", "[('a','<f4')]")
TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool", "complex64",
                "uint16", "float8_e4m3fn")
FILLS = ("normal", "normal", "nan", "inf", "-inf", "one_nan", "zeros", "huge", "denormal")
LAYOUTS = ("contiguous", "contiguous", "transposed", "strided", "fortran", "readonly", "broadcast")
CONTAINERS = ("list", "tuple", "bare", "none", "string", "int_keys", "extra", "missing")
MAX_ELEMENTS = 1 << 20


def _good_recipe(spec: Any) -> dict[str, Any]:
    """What a careful caller passes: a contiguous numpy array of the declared dtype and shape."""
    dtype = spec.dtype.value if spec.dtype.value != "bfloat16" else "float32"
    return {"source": "numpy", "shape": [d if d >= 0 else 2 for d in spec.shape], "dtype": dtype, "fill": "normal",
            "layout": "contiguous", "device": "cpu", "requires_grad": False}


def _defect(choices: Choices, recipe: dict[str, Any]) -> str:
    """Make one thing about an input wrong (or odd but valid: NaN, a strided array); returns what."""
    what = choices.weighted([(3, "shape"), (3, "dtype"), (2, "torch"), (3, "fill"), (3, "layout"), (1, "source"),
                             (1, "meta"), (1, "grad")])
    shape = recipe["shape"]
    if what == "shape":
        edit = choices.choice(("dim", "rank_up", "rank_down", "empty", "scalar"))
        if edit == "dim" and shape:
            i = choices.integer(0, len(shape) - 1)
            shape[i] = choices.choice((0, 1, 2, shape[i] + 1, 7))
        elif edit == "rank_up":
            shape.insert(0, 1)
        elif edit == "rank_down" and shape:
            shape.pop(0)
        elif edit == "empty":
            recipe["shape"] = [0] + shape[1:]
        elif edit == "scalar":
            recipe["shape"] = []
        return f"shape {recipe['shape']}"
    if what in ("dtype", "torch"):
        recipe["source"] = "torch" if what == "torch" else recipe["source"]
        recipe["dtype"] = choices.choice(TORCH_DTYPES if recipe["source"] == "torch" else NUMPY_DTYPES)
        return f"{recipe['source']} {recipe['dtype']}"
    if what in ("fill", "layout"):
        recipe[what] = choices.choice(FILLS if what == "fill" else LAYOUTS)
        return recipe[what]
    if what == "source":
        recipe["source"] = choices.choice(("list", "python_scalar", "none", "string"))
        return recipe["source"]
    recipe["source"] = "torch"
    if recipe["dtype"] not in TORCH_DTYPES:
        recipe["dtype"] = "float32"
    if what == "meta":
        recipe["device"] = "meta"
    else:
        recipe["requires_grad"] = True
    return f"torch {what}"


@functools.lru_cache(maxsize=64)
def _input_specs(engine: bytes) -> tuple:
    """A seed engine's input specs (reading the plan is most of a mutation's time: read each seed once)."""
    from ...plan.file_format import deserialize

    return deserialize(engine)[0].inputs


def mutate_inputs(choices: Choices, bundle: SeedBundle) -> Case:
    seed = choices.choice(sorted(bundle.engines))
    values = {spec.name: _good_recipe(spec) for spec in _input_specs(bundle.engines[seed])}
    container = choices.choice(CONTAINERS) if choices.integer(0, 4) == 0 else "dict"
    defects = [f"container {container}"] if container != "dict" else []
    for _ in range(choices.weighted([(6, 1), (3, 2), (1, 3)])):
        name = choices.choice(sorted(values))
        defects.append(f"{name}: {_defect(choices, values[name])}")
    recipe = {"container": container, "values": values, "input_seed": choices.integer(0, 2**31)}
    info = {"seed": seed, "mutations": defects}
    return Case("inputs", (bundle.engines[seed], json.dumps(recipe).encode()), info)


def _fill(rng: np.random.Generator, shape: list[int], fill: str) -> np.ndarray:
    values = rng.standard_normal(shape)
    special = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "zeros": 0.0, "huge": 1e300, "denormal": 1e-310}
    if fill in special:
        values[...] = special[fill]
    elif fill == "one_nan" and values.size:
        values.reshape(-1)[rng.integers(values.size)] = np.nan
    return values


def _numpy_value(rng: np.random.Generator, recipe: dict) -> Any:
    values = _fill(rng, recipe["shape"], recipe["fill"])
    dtype = np.dtype(eval_free_dtype(recipe["dtype"]))
    with np.errstate(all="ignore"):
        array = values.astype(dtype) if dtype.kind not in "OUSVM" else _odd_array(values, dtype)
    layout = recipe["layout"]
    if layout == "transposed" and array.ndim >= 2:
        array = np.ascontiguousarray(np.swapaxes(array, -1, -2)).swapaxes(-1, -2)
    elif layout == "strided" and array.ndim >= 1:
        array = np.repeat(array, 2, axis=-1)[..., ::2]
    elif layout == "fortran":
        array = np.asfortranarray(array)
    elif layout == "readonly":
        array.flags.writeable = False
    elif layout == "broadcast" and array.ndim >= 1:
        array = np.broadcast_to(array[..., :1], array.shape)
    return array


def eval_free_dtype(text: str) -> Any:
    """A numpy dtype from the recipe's spelling; the structured one is spelled out here, never evaluated."""
    return [("a", "<f4")] if text == "[('a','<f4')]" else text


def _odd_array(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "O":
        return values.astype(object)
    if dtype.kind in "US":
        return values.astype(str).astype(dtype)
    if dtype.kind == "M":
        return values.astype(np.int64).astype(dtype)
    return np.zeros(values.shape, dtype)  # void


def _torch_value(rng: np.random.Generator, recipe: dict) -> Any:
    import torch

    dtype = getattr(torch, recipe["dtype"])
    values = torch.from_numpy(_fill(rng, recipe["shape"], recipe["fill"]))
    with np.errstate(all="ignore"):
        tensor = values.to(dtype) if dtype.is_floating_point or dtype.is_complex else values.clamp(-100, 100).to(dtype)
    if recipe["layout"] == "transposed" and tensor.dim() >= 2:
        tensor = tensor.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif recipe["layout"] == "strided" and tensor.dim() >= 1:
        tensor = tensor.repeat_interleave(2, dim=-1)[..., ::2]
    elif recipe["layout"] == "broadcast" and tensor.dim() >= 1:
        tensor = tensor[..., :1].expand(tensor.shape)
    if recipe["device"] == "meta":
        tensor = tensor.to("meta")
    if recipe["requires_grad"] and (dtype.is_floating_point or dtype.is_complex):
        tensor.requires_grad_(True)
    return tensor


def make_value(rng: np.random.Generator, recipe: dict) -> Any:
    if int(np.prod(recipe["shape"], dtype=object)) > MAX_ELEMENTS:
        raise ValueError(f"recipe shape {recipe['shape']} is past the harness's bound")
    source = recipe["source"]
    if source == "torch":
        return _torch_value(rng, recipe)
    if source == "none":
        return None
    if source == "string":
        return "0.5"
    array = _numpy_value(rng, {**recipe, "dtype": recipe["dtype"] if source == "numpy" else "float32"})
    if source == "numpy":
        return array
    if source == "list":
        return array.tolist()
    return float(array.reshape(-1)[0]) if array.size else 0.0  # python_scalar


def make_feed(recipe: dict) -> Any:
    rng = np.random.default_rng(recipe["input_seed"])
    values = {name: make_value(rng, value) for name, value in recipe["values"].items()}
    container = recipe["container"]
    first = next(iter(values.values()), None)
    feeds = {"list": lambda: list(values.values()), "tuple": lambda: tuple(values.values()), "bare": lambda: first,
             "none": lambda: None, "string": lambda: "x", "int_keys": lambda: dict(enumerate(values.values())),
             "extra": lambda: {**values, "not_an_input": first},
             "missing": lambda: dict(list(values.items())[1:])}
    return feeds.get(container, lambda: values)()


@fuzz_target("inputs", "hostile run-time inputs into execute() of good engines", mutate_inputs)
def run_inputs_case(case: Case, run: CaseRun) -> None:
    from ...runtime import Runtime

    run.stage = "load"
    engine = Runtime().deserialize(case.parts[0])
    context = engine.create_execution_context()
    run.stage = "feed"
    try:
        feed = make_feed(json.loads(case.parts[1]))
    except Exception as error:  # noqa: BLE001 - the harness's own failure, counted apart from the library's
        raise HarnessSkip(f"the harness could not make the inputs: {type(error).__name__}: {error}") from None
    run.stage = "execute"
    outputs = context.execute(feed)
    run.stage = "check"
    check_outputs(engine.outputs, outputs)
