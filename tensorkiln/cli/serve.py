"""`kiln serve MODEL_REPOSITORY`: serve a model repository over the KServe v2 / Triton protocol (HTTP and gRPC)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model repository over HTTP and gRPC (KServe v2 / Triton protocol)",
        description="Serve <repo>/<model>/<version>/model.onnx|model.engine (+ <repo>/<model>/config.pbtxt) with "
                    "dynamic batching; needs the serve extra (pip install 'tensorkiln[serve]').")
    parser.add_argument("repository", type=Path, metavar="MODEL_REPOSITORY")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001, help="0: no gRPC")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0: /metrics on the HTTP port only")
    parser.add_argument("--max-request-bytes", type=int, default=64 * 1024 * 1024,
                        help="larger requests are refused with 413 / RESOURCE_EXHAUSTED")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        from ..serve.server import ServerOptions, serve
        import tritonclient.grpc  # noqa: F401  (the generated protocol messages)
        import uvicorn  # noqa: F401
    except ImportError as error:
        from ..errors import TensorkilnError
        raise TensorkilnError(f"kiln serve needs the serve extra ({error.name} is missing): "
                              "pip install 'tensorkiln[serve]'") from None
    options = ServerOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port, max_request_bytes=args.max_request_bytes)
    print(f"kiln serve: {args.repository} on http://{args.host}:{args.http_port} grpc {args.host}:{args.grpc_port}",
          flush=True)
    serve(args.repository, options)
    return 0
