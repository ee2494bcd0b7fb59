"""CaffeContext: what a Caffe layer converter sees of the net while one layer is converted."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import ModelFormatError
from ...ir.graph import Tensor
from ...network import NetworkDefinition
from .caffemodel import AnyLayer, layer_name, layer_type_name


class CaffeConversionError(ModelFormatError):
    """A layer could not be converted (a parameter the converter cannot honour, a blob of the wrong shape)."""


class CaffeContext:
    def __init__(self, network: NetworkDefinition, weights: dict[str, list[np.ndarray]], has_weights: bool):
        self.network = network
        self.weights = weights  # layer name -> its trained blobs (from the caffemodel)
        self.has_weights = has_weights  # a caffemodel was given
        self.blobs: dict[str, Tensor] = {}  # blob name -> the tensor that holds its latest value

    # ---- bottoms ---------------------------------------------------------------------------------
    def input(self, layer: AnyLayer, index: int = 0) -> Tensor:
        if index >= len(layer.bottom):
            raise self.error(layer, f"needs at least {index + 1} bottom blob(s), has {len(layer.bottom)}")
        name = layer.bottom[index]
        if name not in self.blobs:
            raise self.error(layer, f"reads the blob {name!r}, which no earlier layer or input produces")
        return self.blobs[name]

    def inputs(self, layer: AnyLayer) -> list[Tensor]:
        return [self.input(layer, i) for i in range(len(layer.bottom))]

    # ---- trained blobs ------------------------------------------------------------------------------
    def blob_count(self, layer: AnyLayer) -> int:
        return len(self.weights.get(layer_name(layer), []))

    def blob(self, layer: AnyLayer, index: int, shape: Sequence[int], what: str) -> np.ndarray:
        """Trained blob `index` of the layer, reshaped to `shape`; an error naming both shapes when the blob's
        shape disagrees with what the prototxt implies (V1 blobs pad short shapes with leading 1s: accepted)."""
        name = layer_name(layer)
        blobs = self.weights.get(name)
        if blobs is None:
            hint = ("the caffemodel has no blobs for it; is it the caffemodel of this prototxt?" if self.has_weights
                    else "no caffemodel was given; pass the trained weights (--model net.caffemodel)")
            raise self.error(layer, f"needs trained weights ({what}), but {hint}")
        if index >= len(blobs):
            raise self.error(layer, f"needs blob {index} ({what}), but the caffemodel holds {len(blobs)} blob(s) "
                                    "for it")
        array, shape = blobs[index], tuple(int(d) for d in shape)
        if _strip_ones(array.shape) != _strip_ones(shape):
            raise self.error(layer, f"blob {index} ({what}) in the caffemodel has shape {tuple(array.shape)}, but the "
                                    f"prototxt implies {shape}; the caffemodel and the prototxt do not belong "
                                    "together (or the input shape differs from the one the net was trained for)")
        return array.reshape(shape)

    # ---- errors ---------------------------------------------------------------------------------------
    def error(self, layer: AnyLayer, message: str) -> CaffeConversionError:
        return CaffeConversionError(f"Caffe layer {layer_name(layer)!r} ({layer_type_name(layer)}): {message}")


def _strip_ones(shape: Sequence[int]) -> tuple[int, ...]:
    dims = list(shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    return tuple(dims)
