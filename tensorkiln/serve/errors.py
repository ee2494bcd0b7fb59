"""Errors the server answers with: each maps to one HTTP status and one gRPC status code."""
from __future__ import annotations

from ..errors import TensorkilnError


class ServeError(TensorkilnError):
    """A request the server refuses; the message names the problem and, where there is one, the fix."""
    http_status = 500
    grpc_code = "INTERNAL"


class InvalidRequest(ServeError):
    """Malformed payload, unknown tensor name, wrong shape or datatype."""
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(ServeError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServeError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """Full queue, a model being unloaded, or a server shutting down: the client should retry later."""
    http_status = 503
    grpc_code = "UNAVAILABLE"
    retry_after_s = 1
