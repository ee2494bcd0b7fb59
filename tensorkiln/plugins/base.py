"""The plugin contract: what a custom layer class declares and implements.

    @register_plugin("Normalize")
    class Normalize(Plugin):
        @dataclasses.dataclass(frozen=True)
        class Params:                      # typed parameters; leave Params = None for a JSON-able dict
            eps: float = 1e-10

        def output_specs(self, inputs):    # shapes and dtypes of the outputs, from those of the inputs
            return [inputs[0]]

        def forward(self, inputs):         # the implementation, in PyTorch (CPU, and any device by default)
            x = inputs[0]
            return [x / (x.square().sum(1, keepdim=True) + self.params.eps).sqrt()]

A plugin instance is immutable: it is built from its parameters and may be shared by layers and engines.
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Sequence

import torch

from ..ir.dtypes import DataType

DYNAMIC = -1  # a dimension of an output spec whose size is known only at run time


class TensorDesc(NamedTuple):
    """Shape and dtype of one tensor; a dimension of DYNAMIC (-1) is sized at run time."""
    shape: tuple[int, ...]
    dtype: DataType


class Plugin:
    """Base class of custom layers. Subclasses are registered with `@register_plugin("TypeName")`.

    - `Params`: a frozen dataclass of the parameters (int, float, bool, str, enums, tuples of those), or None
      for parameters given as a dict of JSON-able values. The engine file stores the parameters as JSON.
    - `DATA_DEPENDENT`: True when an output size depends on the data (`output_specs` gives DYNAMIC there).
    - `output_specs(inputs)`: the outputs' TensorDesc from the inputs' (None for an omitted optional input).
      Raise ValueError with a clear message for inputs the plugin cannot take.
    - `forward(inputs)`: the outputs as torch tensors. Written with torch operators it runs on every device.
    - `forward_cuda(inputs)`: optional, a CUDA-specific implementation used for inputs on a CUDA device.
    """
    TYPE: ClassVar[str] = ""  # set by register_plugin
    Params: ClassVar[type | None] = None
    DATA_DEPENDENT: ClassVar[bool] = False

    def __init__(self, params: Any):
        self.params = params

    def output_specs(self, inputs: Sequence[TensorDesc | None]) -> list[TensorDesc]:
        raise NotImplementedError(f"plugin {self.TYPE!r} does not declare its output shapes (output_specs)")

    def forward(self, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        raise NotImplementedError(f"plugin {self.TYPE!r} has no implementation (forward)")

    forward_cuda = None  # a subclass may define forward_cuda(self, inputs) -> list of tensors

    @classmethod
    def from_caffe(cls, layer, blobs: Sequence) -> Any:
        """Parameters from a Caffe LayerParameter of this type (the Caffe importer calls it for layers of
        types it has no converter for); the default takes the defaults of `Params`."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def expect_inputs(plugin: Plugin, inputs: Sequence, counts: Sequence[int]) -> None:
    """A clear error when a plugin layer gets a number of inputs it does not take."""
    if len(inputs) not in counts:
        wanted = " or ".join(str(c) for c in counts)
        raise ValueError(f"plugin {plugin.TYPE!r} takes {wanted} inputs, got {len(inputs)}")
