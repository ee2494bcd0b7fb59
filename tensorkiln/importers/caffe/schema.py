"""The Caffe protobuf schema: `caffe_pb2`, generated from `caffe.proto` (in this folder) and checked in.

`caffe.proto` is the part of BVLC Caffe's schema (plus the SSD fork's layers) that inference needs, with
Caffe's own field numbers, so that real caffemodel files decode. Regenerate `caffe_pb2.py` after editing it,
from the repository root:

    python3 -m grpc_tools.protoc -I tensorkiln/importers/caffe --python_out=tensorkiln/importers/caffe \\
        tensorkiln/importers/caffe/caffe.proto

(`pip install grpcio-tools` provides `grpc_tools.protoc`.) The generated module refuses to load under a
protobuf runtime of another major version, or older than the protoc that wrote it; regenerating with a
`grpcio-tools` that matches the installed `protobuf` fixes that.

The schema registers the file name "caffe.proto" (package `caffe`) in protobuf's default descriptor pool, so
it cannot be loaded in the same process as another `caffe_pb2` (pycaffe's, for one) with other contents.
"""
from __future__ import annotations

try:
    from . import caffe_pb2
# VersionError from the generated module's runtime check, or ImportError under protobuf < 5.26 (which has no
# google.protobuf.runtime_version): either way the cure is to regenerate
except Exception as error:
    import google.protobuf

    raise ImportError(f"tensorkiln's Caffe schema (caffe_pb2.py) does not load under protobuf "
                      f"{google.protobuf.__version__}: {error}; regenerate it from caffe.proto with a grpcio-tools "
                      "that matches the installed protobuf (see tensorkiln/importers/caffe/schema.py)") from error

__all__ = ["caffe_pb2"]
