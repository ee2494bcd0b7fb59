"""Ray Serve: a model repository served by replicas spread over a Ray cluster (one per GPU, across nodes).

Each replica loads the repository itself (its engines, its schedulers with their instance threads) and answers the
same KServe v2 HTTP routes as `kiln serve` (the very Starlette app of http_app, so the JSON and binary infer bodies,
health, metadata, statistics and /metrics behave alike); Ray Serve's HTTP proxy spreads the requests over the
replicas. gRPC is `kiln serve`'s only: Ray Serve's proxy speaks its own gRPC services, not KServe's.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

from .metrics import Metrics
from .repository import ModelRepository
from .server import DEFAULT_MAX_REQUEST_BYTES


@dataclasses.dataclass(frozen=True)
class RayDeploymentOptions:
    replicas: int = 1
    num_gpus: float = 0.0  # per replica: 1 places one replica per GPU
    num_cpus: float = 1.0  # per replica
    max_ongoing_requests: int = 256  # per replica; the scheduler's queue bounds what waits inside it
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    name: str = "tensorkiln"


class ReplicaServer:
    """What http_app's routes need of a server, inside one replica (Ray owns the sockets and the shutdown)."""

    def __init__(self, repository: ModelRepository, max_request_bytes: int):
        self.repository = repository
        self.max_request_bytes = max_request_bytes
        self.metrics = Metrics(repository)
        self.accepting = True


REPLICA_HEADER = "kiln-replica"


def with_replica_header(app, replica: str):
    """`app`, its every response naming the replica that answered (host:pid): which one failed, which one is slow."""
    header = (REPLICA_HEADER.encode(), replica.encode())

    async def answered_by_replica(scope, receive, send):
        async def send_named(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)
        await app(scope, receive, send_named)
    return answered_by_replica


def build_application(repository_path: Path, options: RayDeploymentOptions = RayDeploymentOptions(),
                      builder_config=None):
    """A bound Ray Serve application serving `repository_path`; run it with `ray.serve.run(app, route_prefix="/")`."""
    from ray import serve

    repository_path = Path(repository_path).resolve()  # replicas may start in another working directory
    max_request_bytes = options.max_request_bytes

    def build_asgi_app():  # runs in each replica, after the class's __init__
        from .http_app import make_app

        repository = ModelRepository(repository_path, builder_config)
        repository.load_all()
        return with_replica_header(make_app(ReplicaServer(repository, max_request_bytes)),
                                   f"{socket.gethostname()}:{os.getpid()}")

    @serve.ingress(build_asgi_app)
    class KilnModels:
        """The replica: its ASGI app (built by build_asgi_app) holds the repository, engines and contexts."""

    deployment = serve.deployment(
        KilnModels, name=options.name, num_replicas=options.replicas,
        max_ongoing_requests=options.max_ongoing_requests,
        ray_actor_options={"num_gpus": options.num_gpus, "num_cpus": options.num_cpus})
    return deployment.bind()
