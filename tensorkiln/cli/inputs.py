"""What the kiln subcommands share about tensors on the command line: `--shapes` parsing, `--inputs` loading
(.npy / .npz files), random inputs, `--memory-budget`, and the argument-type checkers of argparse.

Numpy is imported here but torch only where bfloat16 forces it, so that `kiln --help` stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError, TensorkilnError
from ..limits import DEFAULT_BUDGET_CAP, DEFAULT_MAX_LAYERS, ResourceLimits, format_bytes

# Random integer inputs are drawn from [0, RANDOM_INT_HIGH): small and non-negative, so that they are valid
# indices into any axis of size >= RANDOM_INT_HIGH (gathers, embeddings) and never all zero.
RANDOM_INT_HIGH = 4


class CommandLineError(TensorkilnError):
    """A value on the command line cannot be understood (a malformed --shapes or --inputs)."""


# ---- argparse types -----------------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def memory_budget(text: str) -> ResourceLimits:
    try:
        return ResourceLimits.from_text(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_memory_budget_argument(parser: argparse.ArgumentParser, max_layers: bool = False) -> None:
    """--memory-budget, which `build`, `run` and `bench` share (args.limits: ResourceLimits, or None), and for
    `build` --max-layers (combine the two with limits_from)."""
    parser.add_argument("--memory-budget", dest="limits", type=memory_budget, metavar="SIZE",
                        help="the most memory one tensor, the model's constants, or the engine's weights and "
                             "activations together may need, e.g. 64GiB; a model or input past it is refused before "
                             "anything is allocated (default: half this machine's memory, at most "
                             f"{format_bytes(DEFAULT_BUDGET_CAP)}: {ResourceLimits().describe()} here)")
    if max_layers:
        parser.add_argument("--max-layers", type=positive_int, metavar="N",
                            help="the most layers the network may have as imported (loops are unrolled), e.g. for a "
                                 f"model with a long loop (default: {DEFAULT_MAX_LAYERS})")


def limits_from(args: argparse.Namespace) -> ResourceLimits | None:
    """The limits --memory-budget and --max-layers give; None where neither is given (the defaults)."""
    if getattr(args, "max_layers", None) is None:
        return args.limits
    return dataclasses.replace(args.limits or ResourceLimits(), max_layers=args.max_layers)


# ---- arguments shared by `run` and `bench` ------------------------------------------------------
def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """--inputs and --seed, which `run` and `bench` share."""
    parser.add_argument("--inputs", action="append", metavar="NAME:FILE.npy,...|FILE.npz",
                        help="input values: NAME:FILE.npy items (comma-separated, or --inputs repeated), an .npz "
                             "holding arrays named like the inputs, or a bare FILE.npy for a one-input engine; "
                             "inputs not given get random values")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random inputs: standard normal floats, small non-negative integers, "
                             "random booleans (default: 0)")
    from .profile_args import add_shape_selection_arguments  # noqa: PLC0415 - it imports this module

    add_shape_selection_arguments(parser)


# ---- --shapes --------------------------------------------------------------------------------
def parse_shapes(text: str | None) -> dict[str, tuple[int, ...]]:
    """`name:1x3x224x224,other:1x10` -> {"name": (1, 3, 224, 224), "other": (1, 10)}.

    The name ends at the last colon, so TensorFlow-style names such as `input_1:0:1x3x224x224` work; an
    empty shape (`name:`) is a scalar.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for item in _items([text] if text else []):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise CommandLineError(f"--shapes item {item!r} is not NAME:DIMS; write it like input:1x3x224x224")
        if name in shapes:
            raise CommandLineError(f"--shapes gives input {name!r} twice")
        shapes[name] = _parse_dims(dims, item)
    return shapes


def _parse_dims(dims: str, item: str) -> tuple[int, ...]:
    if not dims:
        return ()
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise CommandLineError(f"--shapes item {item!r}: {dims!r} is not a shape; write dimensions joined by "
                               "'x', like 1x3x224x224") from None
    if any(d < 0 for d in shape):
        raise CommandLineError(f"--shapes item {item!r} has a negative dimension; engines need fixed sizes")
    return shape


def format_dims(shape: Sequence[int]) -> str:
    """The --shapes spelling of a shape: 1x3x224x224."""
    return "x".join(str(d) for d in shape)


def _items(texts: Iterable[str]) -> list[str]:
    return [item.strip() for text in texts for item in text.split(",") if item.strip()]


# ---- feeds -----------------------------------------------------------------------------------
def make_feed(input_specs: Sequence, input_args: Sequence[str] | None, seed: int,
              limits: ResourceLimits | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Values for every engine input: those the `--inputs` arguments name, random values for the rest. Files
    whose arrays, and inputs whose random values, would be past `limits` are refused before they are read or made.

    Returns (feed, sources): the feed for `ExecutionContext.execute` and, per input, where its value came from.
    """
    limits = limits or ResourceLimits()
    for spec in input_specs:  # random values are made at a wider dtype, then converted
        limits.check_tensor(f"random values for input {spec.name!r}", spec.shape, _random_dtype(spec))
    loaded, sources = load_inputs(input_args or [], input_specs, limits)
    rng = np.random.default_rng(seed)
    feed: dict[str, Any] = {}
    for spec in input_specs:  # every input draws from the generator, so a loaded one does not shift the others
        value = random_value(spec, rng)
        if spec.name in loaded:
            value = loaded[spec.name]
        else:
            sources[spec.name] = f"random (seed {seed})"
        feed[spec.name] = value
    return feed, sources


def random_value(spec, rng: np.random.Generator) -> Any:
    """Random data of an input's shape and dtype, never all zeros: standard normal floats, small
    non-negative integers, random booleans."""
    if spec.dtype.is_floating:
        value = rng.standard_normal(spec.shape, dtype=np.float32)
    elif spec.dtype.value == "bool":
        value = rng.random(spec.shape) < 0.5
    else:
        value = rng.integers(0, RANDOM_INT_HIGH, spec.shape)
    return _as_input_dtype(np.asarray(value), spec)


def _random_dtype(spec) -> np.dtype:
    """The dtype random_value draws an input's values at (before converting them to the input's)."""
    if spec.dtype.is_floating:
        return np.dtype(np.float32)
    return np.dtype(np.float64 if spec.dtype.value == "bool" else np.int64)


def load_inputs(input_args: Sequence[str], input_specs: Sequence, limits: ResourceLimits | None = None
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """Read `--inputs` arguments: `name:file.npy` items (comma-separated or repeated), `file.npz` (arrays
    named like the inputs), or a bare `file.npy` for an engine with a single input. An array whose header
    declares more than `limits` allow is refused before it is read."""
    limits = limits or ResourceLimits()
    specs = {spec.name: spec for spec in input_specs}
    arrays: dict[str, tuple[np.ndarray, str]] = {}
    for item in _items(input_args):
        name, sep, path = item.rpartition(":")
        if not sep:
            name, path = "", item
        for array_name, array in _read_arrays(Path(path), name, specs, limits).items():
            if array_name not in specs:
                where = f"{path} holds an array named {array_name!r}" if not name else f"--inputs {item} names it"
                raise InputError(f"the engine has no input {array_name!r} ({where}); its inputs are {sorted(specs)}")
            if array_name in arrays:
                raise CommandLineError(f"--inputs gives input {array_name!r} twice")
            arrays[array_name] = array, path
    feed, sources = {}, {}
    for name, (array, path) in arrays.items():
        feed[name], note = _conform(array, specs[name], path)
        sources[name] = path + note
    return feed, sources


def _read_arrays(path: Path, name: str, specs: dict, limits: ResourceLimits) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist")
    check_declared_sizes(path, limits)
    try:
        loaded = np.load(path, allow_pickle=False)  # allow_pickle=False: an input file must never run code
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
        else:
            arrays = None
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"cannot read input file {str(path)!r} as .npy/.npz: {error}") from None
    if arrays is not None:
        if name:
            raise CommandLineError(f"--inputs {name}:{path}: an .npz file holds named arrays; give it alone, as "
                                   f"--inputs {path}")
        return arrays
    if not name:
        if len(specs) != 1:
            raise CommandLineError(f"--inputs {path}: say which input it is, as NAME:{path}; the engine's inputs "
                                   f"are {sorted(specs)}")
        name = next(iter(specs))
    return {name: loaded}


def check_declared_sizes(path: Path, limits: ResourceLimits) -> None:
    """Every array of an .npy or .npz file within the budget, by its header: numpy allocates the size a header
    declares before it reads the data, so a 100-byte file can ask for 40 GB."""
    try:
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as file:
                _check_header(file, f"the array in {str(path)!r}", limits)
            return
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as file:
                    _check_header(file, f"array {member.filename!r} in {str(path)!r}", limits)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as error:
        # RuntimeError, NotImplementedError: zipfile's for an encrypted member or an unknown compression
        raise InputError(f"cannot read input file {str(path)!r} as .npy/.npz: {error}") from None


def _check_header(file, what: str, limits: ResourceLimits) -> None:
    version = np.lib.format.read_magic(file)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:  # 3.0 only adds UTF-8 field names: records, which no engine input takes
        raise ValueError(f"{what} has .npy format version {version[0]}.{version[1]}; save it with numpy.save")
    shape, _, dtype = readers[version](file)
    limits.check_tensor(what, shape, dtype)


def _conform(array: np.ndarray, spec, path: str) -> tuple[Any, str]:
    """The array as the engine input `spec` takes it, and a note when its dtype was converted."""
    if tuple(array.shape) != tuple(spec.shape):
        raise InputError(f"input {spec.name!r} from {path} has shape {format_dims(array.shape) or 'scalar'}, but "
                         f"the engine expects {format_dims(spec.shape) or 'scalar'}; save an array of that shape, "
                         f"or rebuild the engine with `kiln build --shapes {spec.name}:{format_dims(array.shape)}`")
    target = np.dtype("float32") if spec.dtype.value == "bfloat16" else spec.dtype.numpy
    if array.dtype == target:
        return _as_input_dtype(array, spec), ""
    # conversions within a kind only (float64 -> float32, int32 -> int64): an integer image fed to a float
    # input, say, usually means the file lacks its preprocessing, which a silent cast would hide
    if array.dtype.kind != target.kind:
        raise InputError(f"input {spec.name!r} from {path} has dtype {array.dtype}, but the engine expects "
                         f"{spec.dtype.value}; convert it first (array.astype('{target}'))")
    return _as_input_dtype(array.astype(target), spec), f" ({array.dtype} -> {spec.dtype.value})"


def _as_input_dtype(array: np.ndarray, spec) -> Any:
    """numpy for every dtype numpy has; a torch tensor for bfloat16, which numpy lacks."""
    if spec.dtype.value == "bfloat16":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(torch.bfloat16)
    return np.ascontiguousarray(array, dtype=spec.dtype.numpy)


def as_numpy(value: Any) -> np.ndarray:
    """An input or output value as numpy (bfloat16 tensors widen to float32)."""
    if isinstance(value, np.ndarray):
        return value
    import torch

    tensor = value.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).contiguous().numpy()
