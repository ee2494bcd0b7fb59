"""`kiln serve`: an inference server speaking the KServe v2 / Triton protocol over HTTP/REST and gRPC.

Folders in processing order: `config` (config.pbtxt -> ModelSettings), `repository` (models on disk -> loaded
models), `scheduler` (a queue per model, dynamic batching, instance threads), `protocol` (tensors <-> the wire),
`http_app` and `grpc_service` (the two front ends), `metrics` (Prometheus), `server` (runs them together);
`ray_deployment` and `ray_app` serve the same HTTP app from replicas on a Ray cluster (the ray extra).

The gRPC messages are the ones generated from Triton's published `grpc_service.proto` / `model_config.proto` and
shipped in `tritonclient` (the serve extra installs it): client and server then share one descriptor, and no message
is written by hand. Nothing here is imported by `import tensorkiln`.
"""
