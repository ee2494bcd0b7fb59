"""Engines for one model version: read model.engine, or build model.onnx once per batch size the scheduler needs.

Engines have fixed shapes today (dynamic shapes are issue 20). A model without batching (max_batch_size 0) gets
one engine at the model's own shapes (or config.pbtxt's dims). A batched model gets one engine per size in
{1, max_batch_size, preferred_batch_size...}, built at load; partial batches are padded up to the next size.
A model.engine is served at its own shapes: its first dimension is its only batch size.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import EngineFormatError
from .config import ModelSettings
from .errors import ServeError

CACHE_DIR = ".kiln-cache"


def batch_sizes(settings: ModelSettings) -> tuple[int, ...]:
    if settings.max_batch_size == 0:
        return (0,)
    return tuple(sorted({1, settings.max_batch_size, *settings.preferred_batch_sizes}))


def engines_for(version_dir: Path, settings: ModelSettings, builder_config=None) -> dict[int, object]:
    from ..runtime import Runtime

    engine_file = version_dir / "model.engine"
    if engine_file.exists():
        engine = Runtime().load(engine_file)
        size = 0 if settings.max_batch_size == 0 else engine.inputs[0].shape[0]
        if size > settings.max_batch_size:
            raise ServeError(f"model {settings.name!r}: model.engine has batch {size} > max_batch_size "
                             f"{settings.max_batch_size}; set max_batch_size to {size} or serve model.onnx")
        return {size: engine}
    source = version_dir / "model.onnx"
    return {size: _cached_build(source, size, settings, builder_config) for size in batch_sizes(settings)}


def _cached_build(source: Path, size: int, settings: ModelSettings, builder_config):
    from ..runtime import Runtime

    cached = source.parent / CACHE_DIR / f"model.b{size}.engine"
    if cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime:
        try:
            return Runtime().load(cached)
        except EngineFormatError:
            pass  # another tensorkiln version's engine, or a torn write: rebuild it
    engine = _build(source, size, settings, builder_config)
    try:
        cached.parent.mkdir(exist_ok=True)
        partial = cached.with_suffix(".partial")
        engine.save(partial)
        partial.replace(cached)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only repository: the engine is rebuilt at the next load
    return engine


def _build(source: Path, size: int, settings: ModelSettings, builder_config):
    from ..builder import Builder, BuilderConfig
    from ..importers.onnx import parse_onnx

    shapes = _input_shapes(source, size, settings)
    network = parse_onnx(source, input_shapes=shapes or None)
    return Builder(builder_config or BuilderConfig()).build(network)


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
