"""Server: the HTTP front end (uvicorn), the gRPC one (grpc.aio) and /metrics, on one asyncio loop.

SIGTERM or SIGINT: readiness turns false and new inferences get 503/UNAVAILABLE, both front ends stop accepting and
wait for the requests in flight, the schedulers answer what they queued, and `run` returns.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from pathlib import Path

from .metrics import Metrics
from .repository import ModelRepository

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001  # 0: no gRPC front end
    metrics_port: int = 8002  # 0: /metrics on the HTTP port only
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    drain_timeout_s: float = 30.0


class Server:
    def __init__(self, repository: ModelRepository, options: ServerOptions = ServerOptions()):
        self.repository = repository
        self.options = options
        self.max_request_bytes = options.max_request_bytes
        self.metrics = Metrics(repository)
        self.accepting = False
        self._stop: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self.serve())

    def request_stop(self) -> None:
        self.accepting = False
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        import uvicorn

        from .grpc_service import make_grpc_server
        from .http_app import make_app

        options = self.options
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests)
                loop.add_signal_handler(signum, self.request_stop)
        config = uvicorn.Config(make_app(self), host=options.host, port=options.http_port, log_level="warning",
                                access_log=False, timeout_graceful_shutdown=options.drain_timeout_s,
                                lifespan="off")
        http = _QuietSignalsServer(config)
        grpc_server = make_grpc_server(self, options.grpc_port, options.host) if options.grpc_port else None
        metrics_server = self._start_metrics()
        if grpc_server is not None:
            await grpc_server.start()
        http_task = asyncio.create_task(http.serve())
        while not http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if http_task.done():  # could not bind: say why
            await http_task
            raise SystemExit(f"kiln serve: cannot listen for HTTP on {options.host}:{options.http_port}")
        self.accepting = True
        await self._stop.wait()
        self.accepting = False
        http.should_exit = True
        stops = [http_task] + ([grpc_server.stop(options.drain_timeout_s)] if grpc_server else [])
        await asyncio.gather(*stops)
        await asyncio.to_thread(self.repository.close)
        if metrics_server is not None:
            metrics_server.shutdown()

    def _start_metrics(self):
        if not self.options.metrics_port:
            return None
        from prometheus_client import start_http_server

        started = start_http_server(self.options.metrics_port, addr=self.options.host, registry=self.metrics.registry)
        return started[0] if isinstance(started, tuple) else None


class _QuietSignalsServer:
    """uvicorn.Server without its own signal handlers: Server.request_stop orders the shutdown of both front ends."""

    def __new__(cls, config):
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        return Quiet(config)


def serve(repository_path: Path, options: ServerOptions = ServerOptions(), builder_config=None) -> None:
    repository = ModelRepository(repository_path, builder_config)
    repository.load_all()
    Server(repository, options).run()
