"""The JSON views of server, model, config and statistics, shared by the HTTP front end and the gRPC one."""
from __future__ import annotations

from .. import __version__

EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics")


def server_metadata() -> dict:
    return {"name": "tensorkiln", "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(model) -> dict:
    return {"name": model.name, "versions": [model.version], "platform": "tensorkiln",
            "inputs": [_tensor(t) for t in model.inputs], "outputs": [_tensor(t) for t in model.outputs]}


def _tensor(tensor) -> dict:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def model_config_message(model):
    """The model's config as Triton's ModelConfig message (the served values, whatever the file omitted)."""
    from .config import model_config_pb2

    pb = model_config_pb2()
    settings = model.settings
    config = pb.ModelConfig(name=model.name, platform="tensorkiln", max_batch_size=settings.max_batch_size)
    for target, tensors in ((config.input, model.inputs), (config.output, model.outputs)):
        for tensor in tensors:
            dims = tensor.shape[1:] if settings.max_batch_size > 0 else tensor.shape
            target.add(name=tensor.name, data_type=pb.DataType.Value("TYPE_" + tensor.datatype), dims=dims)
    if settings.dynamic_batching:
        config.dynamic_batching.preferred_batch_size.extend(settings.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
        config.dynamic_batching.default_queue_policy.max_queue_size = settings.max_queue_size
    kind = pb.ModelInstanceGroup.KIND_GPU if settings.device == "cuda" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=settings.instance_count, kind=kind)
    return config


def model_config(model) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(model_config_message(model), preserving_proto_field_name=True)


def model_statistics(model) -> dict:
    stats = model.stats.snapshot()

    def duration(key):
        count, ns = stats[key]
        return {"count": count, "ns": ns}

    return {"name": model.name, "version": model.version, "last_inference": stats["last_inference_ms"],
            "inference_count": stats["inference_count"], "execution_count": stats["execution_count"],
            "cancelled_count": stats["cancelled"],  # not Triton's: gRPC's ModelStatistics message drops it
            "inference_stats": {key: duration(key) for key in ("success", "fail", "queue", "compute_infer")},
            "batch_stats": [{"batch_size": size, "compute_infer": {"count": count, "ns": ns}}
                            for size, (count, ns) in stats["batch_sizes"].items()]}
