"""The Caffe protobuf schema: `caffe_pb2`, generated from `caffe.proto` (in this folder) and checked in.

`caffe.proto` is the part of BVLC Caffe's schema (plus the SSD fork's layers) that inference needs, with
Caffe's own field numbers, so that real caffemodel files decode. Regenerate `caffe_pb2.py` after editing it with
`bash scripts/generate_caffe_pb2.sh`: it runs the protoc of grpcio-tools 1.72 (protoc 30.0) in a throwaway venv,
whose code loads under protobuf 6.30 .. 7.x (the range pyproject.toml admits; the generated module refuses a
runtime older than its protoc or of a later major version), so tensorkiln installs beside tritonclient
(protobuf<7) and beside the newest protobuf alike.

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
                      f"{google.protobuf.__version__}: {error}; install a protobuf of 6.30 .. 7.x (as pyproject.toml "
                      "asks), or regenerate it with scripts/generate_caffe_pb2.sh") from error

__all__ = ["caffe_pb2"]
