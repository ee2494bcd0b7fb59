"""Tools over built engines: accuracy against onnxruntime (compare), precision bisection, refit.

Each tool is its own module, imported on use (they pull in onnxruntime, onnx or torch)."""
