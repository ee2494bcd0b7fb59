"""TFLite converter families; importing this package registers every converter."""
from . import activation, conv, elementwise, pooling, quantize, reduce, resize, shape, tensor  # noqa: F401
