"""The KServe v2 HTTP/REST front end (a Starlette app run by uvicorn)."""
from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import views
from .errors import InvalidRequest, PayloadTooLarge, ServeError, Unavailable
from .protocol import HEADER_LENGTH, decode_request, encode_response
from .waiters import submit_awaitable


def make_app(server) -> Starlette:
    """`server`: the running Server (repository, limits, shutdown state, metrics)."""
    repository = server.repository

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ClientDisconnected:
                return Response(status_code=499)  # nginx's "client closed request": nobody reads it
            except ServeError as error:
                headers = {"Retry-After": str(Unavailable.retry_after_s)} if isinstance(error, Unavailable) else None
                return JSONResponse({"error": str(error)}, status_code=error.http_status, headers=headers)
        return endpoint

    async def live(request):
        return Response(status_code=200)

    async def ready(request):
        return Response(status_code=200 if server.accepting else 400)

    async def server_metadata(request):
        return JSONResponse(views.server_metadata())

    async def model_metadata(request):
        return JSONResponse(views.model_metadata(_model(request)))

    async def model_ready(request):
        try:
            _model(request)
        except ServeError:
            return Response(status_code=400)
        return Response(status_code=200)

    async def model_config(request):
        return JSONResponse(views.model_config(_model(request)))

    async def infer(request):
        if not server.accepting:
            raise Unavailable("the server is shutting down; retry on another replica")
        model = _model(request)
        body = await _read_body(request, server.max_request_bytes)
        parsed, inputs = decode_request(body, request.headers.get(HEADER_LENGTH))
        rows = model.check_inputs(inputs)
        outputs = await _unless_disconnected(request, *submit_awaitable(model.scheduler, inputs, rows))
        content, header_length = encode_response(model, parsed, outputs)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_length)})

    async def index(request):
        return JSONResponse(repository.index())

    async def load(request):
        await asyncio.to_thread(repository.load, request.path_params["model"])
        return Response(status_code=200)

    async def unload(request):
        await asyncio.to_thread(repository.unload, request.path_params["model"])
        return Response(status_code=200)

    async def statistics(request):
        name = request.path_params.get("model")
        models = [_model(request)] if name else repository.loaded()
        return JSONResponse({"model_stats": [views.model_statistics(m) for m in models]})

    async def metrics(request):
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)

    def _model(request):
        return repository.get(request.path_params["model"], request.path_params.get("version", ""))

    model_routes = []
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        model_routes += [Route(prefix, guarded(model_metadata)), Route(prefix + "/ready", guarded(model_ready)),
                         Route(prefix + "/config", guarded(model_config)),
                         Route(prefix + "/infer", guarded(infer), methods=["POST"]),
                         Route(prefix + "/stats", guarded(statistics))]
    routes = [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
              Route("/v2/models/stats", guarded(statistics)), *model_routes,
              Route("/v2/repository/index", guarded(index), methods=["POST"]),
              Route("/v2/repository/models/{model}/load", guarded(load), methods=["POST"]),
              Route("/v2/repository/models/{model}/unload", guarded(unload), methods=["POST"]),
              Route("/metrics", metrics)]
    return Starlette(routes=routes)


class ClientDisconnected(Exception):
    """The client closed its connection before its answer was ready: there is nobody left to answer."""


async def _unless_disconnected(request: Request, future, waiter):
    """The scheduler's outputs for `future`, awaited on `waiter` (None: run inline, answered); if the client
    disconnects first, cancel it (a queued request is then dropped unrun, see Scheduler) and raise
    ClientDisconnected."""
    if waiter is None:
        return future.result()
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not waiter.done():
        waiter.cancel()
        future.cancel()  # no effect where an instance thread already runs it
        raise ClientDisconnected()
    return waiter.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body is read: the next ASGI message can only be the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request has {declared} bytes, over the server's limit of {limit}; send smaller "
                              "batches or start kiln serve with a larger --max-request-bytes")
    if request.headers.get("content-encoding") not in (None, "identity"):
        raise InvalidRequest(f"Content-Encoding {request.headers['content-encoding']!r} is not supported; send the "
                             "body uncompressed")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request is over the server's limit of {limit} bytes; send smaller batches or "
                                  "start kiln serve with a larger --max-request-bytes")
        parts.append(chunk)
    return b"".join(parts)
