"""The intermediate representation: tensors, layers with typed attributes, networks."""
from .dtypes import DataType
from .graph import Layer, Network, Tensor
from .printer import format_network
from .verify import InvariantError, verify

__all__ = ["DataType", "Layer", "Network", "Tensor", "format_network", "verify", "InvariantError"]
