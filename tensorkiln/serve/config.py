"""A model's config.pbtxt (Triton's model configuration, the subset that applies) -> ModelSettings.

Parsed with protobuf's text_format into the ModelConfig message generated from Triton's model_config.proto, so a
field Triton does not know is an error, and a field Triton knows but tensorkiln does not use is ignored (listed in
the README). A model directory without config.pbtxt is served with defaults: no batching, one instance.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .datatypes import CONFIG_PREFIX, FROM_WIRE
from .errors import ServeError

DEFAULT_MAX_QUEUE_SIZE = 1024  # requests waiting per model before 503: a bounded queue, never an unbounded backlog


class ConfigError(ServeError):
    """A config.pbtxt that cannot be parsed or asks for something tensorkiln cannot serve."""
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


@dataclasses.dataclass(frozen=True)
class TensorConfig:
    name: str
    datatype: str  # wire name: FP32, INT64, ...
    dims: tuple[int, ...]  # without the batch dimension when max_batch_size > 0


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    name: str
    max_batch_size: int = 0  # 0: requests carry their full shape and are never batched together
    inputs: tuple[TensorConfig, ...] = ()  # empty: taken from the engine
    outputs: tuple[TensorConfig, ...] = ()
    dynamic_batching: bool = False
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    instance_count: int = 1
    version_policy: str = "latest"  # latest (1 version) or all
    device: str = "cpu"  # where model.onnx is built to run: cuda for instance_group kind KIND_GPU
    precision: str = ""  # fp16/fp32 from a TensorRT accelerator's precision_mode; "": the server's builder default
    config_text: str = ""  # the file as given, for the model config endpoints


def model_config_pb2():
    from tritonclient.grpc import model_config_pb2 as module  # the serve extra; generated from model_config.proto
    return module


def read_settings(model_dir: Path) -> ModelSettings:
    path = model_dir / "config.pbtxt"
    if not path.exists():
        return ModelSettings(name=model_dir.name)
    return parse_settings(path.read_text(), model_dir.name, str(path))


def parse_settings(text: str, default_name: str, source: str = "config.pbtxt") -> ModelSettings:
    from google.protobuf import text_format

    config = model_config_pb2().ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ConfigError(f"{source}: {error}; see Triton's model_config.proto for the fields") from None
    if config.name and config.name != default_name:
        raise ConfigError(f"{source}: name {config.name!r} differs from the model's directory {default_name!r}; "
                          "make them equal or drop the name field")
    if config.max_batch_size < 0:
        raise ConfigError(f"{source}: max_batch_size must be >= 0, not {config.max_batch_size}")
    batching = config.HasField("dynamic_batching")
    policy = config.dynamic_batching.default_queue_policy
    queue_size = policy.max_queue_size if batching and policy.max_queue_size > 0 else DEFAULT_MAX_QUEUE_SIZE
    preferred = tuple(config.dynamic_batching.preferred_batch_size)
    if any(size < 1 or size > max(config.max_batch_size, 1) for size in preferred):
        raise ConfigError(f"{source}: preferred_batch_size {list(preferred)} must lie in 1..max_batch_size "
                          f"({config.max_batch_size})")
    device, precision = _placement(config, source)
    return ModelSettings(
        name=default_name, max_batch_size=config.max_batch_size,
        inputs=tuple(_tensor(t, source) for t in config.input),
        outputs=tuple(_tensor(t, source) for t in config.output),
        dynamic_batching=batching and config.max_batch_size > 0, preferred_batch_sizes=preferred,
        max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds, max_queue_size=queue_size,
        instance_count=max(1, sum(group.count or 1 for group in config.instance_group) or 1),
        version_policy="all" if config.version_policy.HasField("all") else "latest", device=device,
        precision=precision, config_text=text)


def _placement(config, source: str) -> tuple[str, str]:
    """(device, precision) of a model.onnx build: Triton's instance_group kind and the TensorRT accelerator's
    precision_mode, the fields a Triton config for a TensorRT-accelerated model already has."""
    pb = model_config_pb2()
    kinds = {pb.ModelInstanceGroup.Kind.Name(group.kind) for group in config.instance_group}
    if "KIND_GPU" in kinds and len(kinds) > 1:
        raise ConfigError(f"{source}: instance groups of kinds {sorted(kinds)}; a tensorkiln model runs all its "
                          "instances on one device: give every group the same kind")
    precision = ""
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        mode = accelerator.parameters.get("precision_mode", "") if accelerator.name == "tensorrt" else ""
        if mode and mode not in ("FP16", "FP32"):
            raise ConfigError(f"{source}: precision_mode {mode!r} is not served from model.onnx; use FP16 or FP32, "
                              "or ship an INT8 model.engine built with kiln build --int8")
        precision = mode.lower() or precision
    return ("cuda" if "KIND_GPU" in kinds else "cpu"), precision


def _tensor(tensor, source: str) -> TensorConfig:
    enum_name = model_config_pb2().DataType.Name(tensor.data_type)
    wire = enum_name.removeprefix(CONFIG_PREFIX)
    if wire not in FROM_WIRE:
        raise ConfigError(f"{source}: tensor {tensor.name!r} has data_type {enum_name}, which tensorkiln does not "
                          f"serve; use one of {', '.join(CONFIG_PREFIX + w for w in FROM_WIRE)}")
    return TensorConfig(tensor.name, wire, tuple(tensor.dims))
