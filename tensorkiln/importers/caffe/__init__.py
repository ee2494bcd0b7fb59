"""Caffe importer: deploy.prototxt (text) + .caffemodel (binary), V1 and V2 formats.

    from tensorkiln.importers.caffe import parse_caffe
    network = parse_caffe("deploy.prototxt", "net.caffemodel", outputs=["prob"])

Converters live in `layers/` (one module per family, registered with `@caffe_converter("Type")`); a layer
type without a converter is served by a registered plugin of the same name (tensorkiln.plugins).
"""
from .parser import CaffeParser, parse_caffe
from .registry import caffe_converter, supported_layer_types

__all__ = ["CaffeParser", "parse_caffe", "caffe_converter", "supported_layer_types"]
