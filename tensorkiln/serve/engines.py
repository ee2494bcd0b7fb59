"""Engines for one model version: read model.engine, or build model.onnx (once, cached beside it).

What the scheduler gets is {batch size: engine}; a batch of n rows runs on the smallest size holding n, its tail
padded with zeros (key 0: a model without batching, each request run at its own shape).

- A batched model.onnx (max_batch_size > 0) is built once into ONE engine with an optimization profile over the
  batch dimension (1..max_batch_size, opt the largest preferred_batch_size or max_batch_size), which every batch
  size maps to. An engine with profiles specializes each concrete shape once (runtime/profiles.py), so the sizes
  it runs are a bounded set, `served_batch_sizes` (every size up to 8, then powers of two, the preferred sizes and
  max_batch_size), all specialized at load, never on a request's time.
- A model.engine with profiles is served the same way (its profile 0; max_batch_size must lie in its batch range),
  or, without batching, at any shape its profile 0 takes.
- A fixed-shape model.engine is served at its own shapes: its first dimension is its only batch size.
- A model.onnx without batching gets one fixed-shape engine at the model's (or config.pbtxt's) shapes.

model.onnx is built for the CPU, or for CUDA where config.pbtxt's instance_group kind is KIND_GPU, in FP16 where a
TensorRT accelerator's precision_mode says so (config.py); the cached file's name says which.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import EngineFormatError
from .config import ModelSettings
from .errors import ServeError

CACHE_DIR = ".kiln-cache"
EXACT_BATCH_SIZES = 8  # every batch size up to this runs unpadded; above it, powers of two and the preferred sizes


def is_profiled(engine) -> bool:
    return hasattr(engine, "num_optimization_profiles")


def served_batch_sizes(settings: ModelSettings, smallest: int = 1) -> tuple[int, ...]:
    """The batch sizes a batched model runs at (a batch is padded to the smallest holding it): few enough that each
    is specialized once and kept (an engine with profiles holds 16 specializations), dense where padding costs
    most."""
    largest = settings.max_batch_size
    sizes = {*range(1, min(EXACT_BATCH_SIZES, largest) + 1), largest, *settings.preferred_batch_sizes}
    sizes |= {1 << k for k in range(largest.bit_length()) if 1 << k <= largest}
    return tuple(sorted(size for size in sizes | {smallest} if smallest <= size <= largest))


def engines_for(version_dir: Path, settings: ModelSettings, builder_config=None) -> dict[int, object]:
    from ..runtime import Runtime

    engine_file = version_dir / "model.engine"
    if engine_file.exists():
        engine = Runtime().load(engine_file)
        if is_profiled(engine):
            return _profiled_sizes(engine, settings, "model.engine")
        size = 0 if settings.max_batch_size == 0 else engine.inputs[0].shape[0]
        if size > settings.max_batch_size:
            raise ServeError(f"model {settings.name!r}: model.engine has batch {size} > max_batch_size "
                             f"{settings.max_batch_size}; set max_batch_size to {size} or serve model.onnx")
        return {size: engine}
    source = version_dir / "model.onnx"
    builder_config = placed_config(settings, builder_config)
    tag = "" if settings.device == "cpu" and not settings.precision else f".{settings.device}-{settings.precision}"
    if settings.max_batch_size == 0:
        return {0: _cached(source, f"model.b0{tag}.engine", lambda: _build_fixed(source, settings, builder_config))}
    opt = max(settings.preferred_batch_sizes, default=settings.max_batch_size)
    name = f"model.b1-{opt}-{settings.max_batch_size}{tag}.engine"  # the profile's min, opt and max batch
    engine = _cached(source, name, lambda: _build_profiled(source, settings, builder_config))
    return _profiled_sizes(engine, settings, f"{CACHE_DIR}/{name}")


def placed_config(settings: ModelSettings, builder_config=None):
    """The server's builder config, on the device and in the precision the model's config.pbtxt asks for."""
    from ..builder import BuilderConfig, Target
    from ..quant.precision import Precision

    config = builder_config or BuilderConfig()
    if settings.device == "cuda":
        config = dataclasses.replace(config, target=Target.CUDA)
    if settings.precision:
        config = dataclasses.replace(config, precision=Precision(settings.precision))
    return config


def _profiled_sizes(engine, settings: ModelSettings, where: str) -> dict[int, object]:
    """{batch size: engine} for an engine with profiles (profile 0 serves), after checking it fits the config."""
    profile = engine.profiles[0]
    if settings.max_batch_size == 0:
        return {0: engine}
    ranges = {name: profile.range_of(name) for name in profile.names}
    batch = {(r.min[0], r.max[0]) for r in ranges.values() if r is not None and len(r.min) > 0}
    if len(batch) != 1 or any(r is None for r in ranges.values()):
        raise ServeError(f"model {settings.name!r}: {where}'s optimization profile 0 does not give every input the "
                         "same batch range in its first dimension; rebuild it so, or serve it with max_batch_size 0")
    (smallest, largest), = batch
    if largest < settings.max_batch_size:
        raise ServeError(f"model {settings.name!r}: {where}'s profile 0 runs batches up to {largest} < "
                         f"max_batch_size {settings.max_batch_size}; set max_batch_size to {largest} or rebuild it")
    sizes = served_batch_sizes(settings, max(smallest, 1))
    # every size served stays specialized: none is evicted and built again on a request's time
    engine.max_specializations = max(engine.max_specializations, len(sizes))
    return {size: engine for size in sizes}


def _cached(source: Path, name: str, build):
    from ..runtime import Runtime

    cached = source.parent / CACHE_DIR / name
    if cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime:
        try:
            return Runtime().load(cached)
        except EngineFormatError:
            pass  # another tensorkiln version's engine, or a torn write: rebuild it
    engine = build()
    try:
        cached.parent.mkdir(exist_ok=True)
        partial = cached.with_suffix(".partial")
        engine.save(partial)
        partial.replace(cached)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only repository: the engine is rebuilt at the next load
    return engine


def _build_fixed(source: Path, settings: ModelSettings, builder_config):
    from ..builder import Builder, BuilderConfig
    from ..importers.onnx import parse_onnx

    shapes = _input_shapes(source, 0, settings)
    network = parse_onnx(source, input_shapes=shapes or None)
    return Builder(builder_config or BuilderConfig()).build(network)


def _build_profiled(source: Path, settings: ModelSettings, builder_config):
    """One engine over batch 1..max_batch_size, tuned at the largest preferred size (or max_batch_size)."""
    from ..builder import BuilderConfig
    from ..plan.profiles import OptimizationProfile, ShapeRange
    from ..profile_builder import ModelSource, build_with_profiles

    largest = settings.max_batch_size
    opt = max(settings.preferred_batch_sizes, default=largest)
    low, mid, high = (_input_shapes(source, size, settings) for size in (1, opt, largest))
    profile = OptimizationProfile(tuple((name, ShapeRange(low[name], mid[name], high[name])) for name in low))
    return build_with_profiles(ModelSource.from_onnx(source), [profile], builder_config or BuilderConfig())


def _input_shapes(source: Path, size: int, settings: ModelSettings) -> dict[str, tuple[int, ...]]:
    """{input: shape} for a build at batch `size` (0: the model's or the config's own shapes)."""
    import onnx

    configured = {t.name: t.dims for t in settings.inputs}
    graph = onnx.load(str(source), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    shapes = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = configured.get(value.name)
        if dims is None:
            model_dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
            dims = model_dims[1:] if size else model_dims
        if size:
            dims = (size, *dims)
        if any(d < 1 for d in dims):
            raise ServeError(f"model {settings.name!r}: input {value.name!r} has unknown dimensions {list(dims)}; "
                             "give its dims in config.pbtxt")
        shapes[value.name] = tuple(dims)
    return shapes
