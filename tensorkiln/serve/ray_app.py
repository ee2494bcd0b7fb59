"""`python -m tensorkiln.serve.ray_app MODEL_REPOSITORY`: serve a model repository on Ray Serve.

Joins the Ray cluster at --address (`auto`: the one `ray start --head` runs on this node; none: a local one started
here), deploys --replicas replicas of the repository (--num-gpus each) behind Ray Serve's HTTP proxy on --http-port,
and waits for SIGTERM/SIGINT, then shuts the application down. The repository path must be readable on every node.
"""
from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .ray_deployment import RayDeploymentOptions, build_application


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tensorkiln.serve.ray_app", description=__doc__.split("\n")[0])
    parser.add_argument("repository", type=Path, metavar="MODEL_REPOSITORY")
    parser.add_argument("--address", default=None, help="Ray cluster to join ('auto', ray://host:10001); default: "
                                                        "start a local one")
    parser.add_argument("--host", default="127.0.0.1", help="address of Ray Serve's HTTP proxy (0.0.0.0: all)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (1: one replica per GPU)")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    parser.add_argument("--max-request-bytes", type=int, default=RayDeploymentOptions.max_request_bytes)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import ray
        from ray import serve
    except ImportError:
        raise SystemExit("tensorkiln.serve.ray_app needs Ray Serve: pip install 'tensorkiln[ray]'") from None
    if not (args.repository / ".").is_dir():
        raise SystemExit(f"{args.repository}: no such model repository directory")
    options = RayDeploymentOptions(replicas=args.replicas, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
                                   max_request_bytes=args.max_request_bytes)
    ray.init(address=args.address)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # after ray.init, whose handlers would kill us without cleanup
        signal.signal(signum, lambda *_: stop.set())
    serve.start(http_options={"host": args.host, "port": args.http_port})
    serve.run(build_application(args.repository, options), name=options.name, route_prefix="/")
    print(f"tensorkiln on Ray Serve: {args.repository} on http://{args.host}:{args.http_port} "
          f"({args.replicas} replicas, {args.num_gpus} GPUs each)", flush=True)
    stop.wait()
    print("tensorkiln on Ray Serve: stopping", flush=True)
    serve.shutdown()  # replicas finish the requests they hold (Ray Serve's graceful shutdown) before they exit
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
