"""Layer kinds of the IR and their typed attributes.

Each layer kind is a frozen dataclass registered under a stable name (`KIND`). The dataclass holds the
attributes only; tensors (data and weights) are the layer's inputs. Enums name the variants of a family
(activation types, elementwise operations, ...) the way TensorRT's API does.
"""
from __future__ import annotations

# One namespace for every kind (`ops.Convolution`, `ops.ActivationType.RELU`), defined by concern in the modules below.
from .base import OP_KINDS, Ints, OpAttrs, attrs_of, op  # noqa: F401
from .custom import *  # noqa: F401,F403
from .enums import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .onnx_coverage import *  # noqa: F401,F403
from .optimized import *  # noqa: F401,F403
