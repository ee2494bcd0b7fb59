"""The KServe v2 gRPC front end (grpc.aio), on the service and messages generated from Triton's grpc_service.proto
(shipped in tritonclient.grpc). Replies reuse `views`' dictionaries through protobuf's json_format. ModelInfer takes
and returns bytes, read and written by grpc_wire (tensor bytes kept out of protobuf: no copies of them there)."""
from __future__ import annotations

import asyncio
import math

import numpy as np

from . import views
from .datatypes import numpy_dtype
from .errors import InvalidRequest, ServeError, Unavailable
from .grpc_wire import InferAnswer, InferCodec
from .waiters import outputs_of

CONTENTS_FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                   "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                   "FP32": "fp32_contents", "FP64": "fp64_contents"}


def make_grpc_server(server, port: int, host: str):
    import grpc
    from google.protobuf import json_format
    from tritonclient.grpc import service_pb2 as pb

    repository = server.repository
    codec = InferCodec(pb)

    async def fail(context, error: ServeError):
        metadata = (("retry-after", str(Unavailable.retry_after_s)),) if isinstance(error, Unavailable) else ()
        if metadata:
            context.set_trailing_metadata(metadata)
        await context.abort(getattr(grpc.StatusCode, error.grpc_code), str(error))

    def guarded(method):
        async def handler(request, context):
            try:
                return await method(request)
            except ServeError as error:
                await fail(context, error)
        return handler

    async def server_live(request):
        return pb.ServerLiveResponse(live=True)

    async def server_ready(request):
        return pb.ServerReadyResponse(ready=server.accepting)

    async def model_ready(request):
        try:
            repository.get(request.name, request.version)
        except ServeError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(request):
        return json_format.ParseDict(views.server_metadata(), pb.ServerMetadataResponse())

    async def model_metadata(request):
        model = repository.get(request.name, request.version)
        return json_format.ParseDict(views.model_metadata(model), pb.ModelMetadataResponse())

    async def model_config(request):
        model = repository.get(request.name, request.version)
        return pb.ModelConfigResponse(config=views.model_config_message(model))

    async def model_infer(data: bytes) -> bytes:
        if not server.accepting:
            raise Unavailable("the server is shutting down; retry on another replica")
        call = codec.read_request(data)
        request = call.message
        model = repository.get(request.model_name, request.model_version)
        inputs = _decode_inputs(request, call.raw)
        rows = model.check_inputs(inputs)
        outputs = await outputs_of(model.scheduler, inputs, rows)
        return codec.write_response(_encode_outputs(pb, model, request, outputs))

    async def repository_index(request):
        return json_format.ParseDict({"models": repository.index()}, pb.RepositoryIndexResponse())

    async def repository_load(request):
        await asyncio.to_thread(repository.load, request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(request):
        await asyncio.to_thread(repository.unload, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def model_statistics(request):
        models = [repository.get(request.name, request.version)] if request.name else repository.loaded()
        stats = {"model_stats": [views.model_statistics(m) for m in models]}
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    methods = {"ServerLive": server_live, "ServerReady": server_ready, "ModelReady": model_ready,
               "ServerMetadata": server_metadata, "ModelMetadata": model_metadata, "ModelConfig": model_config,
               "ModelInfer": model_infer, "RepositoryIndex": repository_index,
               "RepositoryModelLoad": repository_load, "RepositoryModelUnload": repository_unload,
               "ModelStatistics": model_statistics}
    options = [("grpc.max_receive_message_length", server.max_request_bytes),
               ("grpc.max_send_message_length", -1)]
    grpc_server = grpc.aio.server(options=options)
    _add_handlers(grpc_server, pb, {name: guarded(method) for name, method in methods.items()}, raw={"ModelInfer"})
    bound = grpc_server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise ServeError(f"cannot listen for gRPC on {host}:{port}; pick a free --grpc-port")
    return grpc_server


def _add_handlers(grpc_server, pb, handlers: dict, raw: set[str]) -> None:
    """Serve `handlers` ({method name: async handler(request, context)}) as the methods of grpc_service.proto's
    GRPCInferenceService, their messages (de)serialized by the generated classes, except the methods in `raw`,
    whose handlers take and return bytes. Methods without a handler answer UNIMPLEMENTED."""
    import grpc
    from google.protobuf import message_factory

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    method_handlers = {}
    for method in service.methods:
        handler = handlers.get(method.name)
        if handler is None:
            continue
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        serializers = ({} if method.name in raw else
                       {"request_deserializer": request_type.FromString,
                        "response_serializer": response_type.SerializeToString})
        method_handlers[method.name] = grpc.unary_unary_rpc_method_handler(handler, **serializers)
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, method_handlers),))
    if hasattr(grpc_server, "add_registered_method_handlers"):  # grpcio >= 1.63: looked up without the generic scan
        grpc_server.add_registered_method_handlers(service.full_name, method_handlers)


def _decode_inputs(request, raw: list) -> dict[str, np.ndarray]:
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input")
    inputs = {}
    for index, tensor in enumerate(request.inputs):
        dtype = numpy_dtype(tensor.datatype)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidRequest(f"input {tensor.name!r}: shape {shape} has a negative dimension")
        count = math.prod(shape)
        if tensor.name in inputs:
            raise InvalidRequest(f"input {tensor.name!r} is given twice")
        if raw:
            data = raw[index]  # each read of a bytes field copies it out of the message: read it once
            if len(data) != count * dtype.itemsize:
                raise InvalidRequest(f"input {tensor.name!r}: {len(data)} bytes for shape {shape} of {dtype} "
                                     f"({count * dtype.itemsize} bytes)")
            inputs[tensor.name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        else:
            values = getattr(tensor.contents, CONTENTS_FIELDS.get(tensor.datatype, "bytes_contents"))
            if len(values) != count:
                raise InvalidRequest(f"input {tensor.name!r}: {len(values)} values for shape {shape}")
            inputs[tensor.name] = np.asarray(values, dtype=dtype).reshape(shape)
    return inputs


def _encode_outputs(pb, model, request, outputs) -> InferAnswer:
    known = {t.name: t for t in model.outputs}
    names = [o.name for o in request.outputs] or list(known)
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
    raw = []
    for name in names:
        if name not in known:
            raise InvalidRequest(f"model {model.name!r} has no output {name!r}; its outputs are {', '.join(known)}")
        value = outputs[name]
        response.outputs.add(name=name, datatype=known[name].datatype, shape=value.shape)
        raw.append(value)
    return InferAnswer(response, raw)
