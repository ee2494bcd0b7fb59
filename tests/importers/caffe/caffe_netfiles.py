"""Writing small Caffe nets for tests: a prototxt text and a caffemodel holding the given blobs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import tensorkiln as tk
from tensorkiln.importers.caffe import parse_caffe
from tensorkiln.importers.caffe.schema import caffe_pb2


def write_net(folder: Path, prototxt: str, blobs: dict[str, list[np.ndarray]] | None = None,
              v1: bool = False) -> tuple[Path, Path | None]:
    """deploy.prototxt with `prototxt`, and net.caffemodel with `blobs` ({layer name: arrays}; None without)."""
    deploy = folder / "deploy.prototxt"
    deploy.write_text(prototxt)
    if not blobs:
        return deploy, None
    net = caffe_pb2.NetParameter(name="test")
    for name, arrays in (blobs or {}).items():
        layer = net.layers.add(name=name) if v1 else net.layer.add(name=name)
        for array in arrays:
            blob = layer.blobs.add()
            if v1:  # V1 blobs: the legacy (num, channels, height, width), short shapes padded with leading 1s
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + tuple(array.shape)
            else:
                blob.shape.dim.extend(array.shape)
            blob.data.extend(np.asarray(array, np.float32).reshape(-1).tolist())
    model = folder / "net.caffemodel"
    model.write_bytes(net.SerializeToString())
    return deploy, model


def run_net(folder: Path, prototxt: str, blobs: dict, feed: dict[str, np.ndarray], **kwargs) -> dict[str, np.ndarray]:
    """Build the net (serialized and reloaded) and run it on `feed`."""
    deploy, model = write_net(folder, prototxt, blobs)
    network = parse_caffe(deploy, model, **kwargs)
    engine = tk.Runtime().deserialize(tk.Builder().build(network).serialize())
    return engine.create_execution_context().execute(feed)


def input_layer(name: str, shape) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'
