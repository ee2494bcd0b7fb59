#!/usr/bin/env bash
# Regenerates tensorkiln/importers/caffe/caffe_pb2.py from caffe.proto beside it.
#
# Why this protoc: generated Python code checks the protobuf runtime when imported, and accepts runtimes from its own
# version up to the next major one (https://protobuf.dev/support/cross-version-runtime-guarantee). grpcio-tools 1.72
# bundles protoc 30.0, whose code says "Protobuf Python Version: 6.30.0": it loads under protobuf 6.30 .. 7.x, so
# tensorkiln sits beside tritonclient (protobuf<7) and beside the newest protobuf alike. A newer grpcio-tools
# would raise that floor and drop 6.x. The tool runs in a throwaway venv so the caller's protobuf stays as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/protoc"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "grpcio-tools==1.72.2"
"$venv/bin/python" -m grpc_tools.protoc -I tensorkiln/importers/caffe --python_out=tensorkiln/importers/caffe \
    tensorkiln/importers/caffe/caffe.proto
grep -m1 "Protobuf Python Version" tensorkiln/importers/caffe/caffe_pb2.py
rm -rf "$(dirname "$venv")"
