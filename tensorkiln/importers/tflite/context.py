"""TFLiteContext: what a converter sees of the model while one operator is converted."""
from __future__ import annotations

import numpy as np

from ...errors import ModelFormatError
from ...ir.dtypes import DataType
from ...ir.graph import Tensor
from ...ir.ops import ActivationType
from ...network import NetworkDefinition
from .model import OperatorRecord, SubgraphRecord, TensorRecord

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


class ConversionError(ModelFormatError):
    """An operator could not be converted (an option or input the converter cannot honour)."""


class TFLiteContext:
    def __init__(self, network: NetworkDefinition, subgraph: SubgraphRecord):
        self.network = network
        self.subgraph = subgraph
        self.tensors: dict[int, Tensor] = {}  # TFLite tensor index -> IR tensor (float where TFLite quantizes)
        self.op: OperatorRecord | None = None

    # ---- inputs ----------------------------------------------------------------------------------
    def record(self, index: int) -> TensorRecord:
        return self.subgraph.tensors[index]

    def input_record(self, position: int) -> TensorRecord | None:
        index = self._input_index(position)
        return None if index < 0 else self.record(index)

    def output_record(self, position: int = 0) -> TensorRecord:
        return self.record(self.op.outputs[position])

    def has_input(self, position: int) -> bool:
        return self._input_index(position) >= 0

    def input(self, position: int) -> Tensor | None:
        """The tensor of input `position` (None where the optional input is omitted). Quantized constants come
        dequantized to float32; quantized activations are float already (the parser dequantizes them)."""
        index = self._input_index(position)
        if index < 0:
            return None
        if index not in self.tensors:
            record = self.record(index)
            if record.data is None:
                raise self.error(f"input {position} (tensor {record.name!r}) is neither a constant nor produced by "
                                 "an earlier operator (the model is malformed)")
            value = self.value(position)
            self.tensors[index] = self.network.add_constant(None, value, name=record.name).get_output(0)
        return self.tensors[index]

    def value(self, position: int) -> np.ndarray | None:
        """The constant value of input `position` (dequantized where the model stores it quantized), else None."""
        record = self.input_record(position)
        if record is None:
            return None
        if record.data is not None:
            if record.is_quantized:
                return record.quantization.dequantize(record.data)
            return record.data
        tensor = self.tensors.get(record.index)
        return None if tensor is None else tensor.value

    def require_value(self, position: int, what: str) -> np.ndarray:
        value = self.value(position)
        if value is None:
            raise self.error(f"its {what} (input {position}) must be known when the engine is built, but it is "
                             "computed from run-time data; tensorkiln builds engines for fixed shapes")
        return value

    def ints(self, position: int, what: str) -> list[int]:
        return [int(v) for v in np.asarray(self.require_value(position, what)).reshape(-1)]

    def _input_index(self, position: int) -> int:
        inputs = self.op.inputs
        return inputs[position] if position < len(inputs) else -1

    # ---- options -----------------------------------------------------------------------------------
    def option(self, name: str, default=None):
        """An option of the operator's *Options table (`ctx.option("StrideW")`), or `default` where it has none."""
        options = self.op.options
        if options is None or not hasattr(options, name):
            return default
        return getattr(options, name)()

    # ---- common helpers -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """A name for the operator's layers: its first output tensor's."""
        outputs = self.op.outputs
        return self.record(outputs[0]).name if outputs else f"{self.op.op_name}_{self.op.index}"

    def fused_activation(self, tensor: Tensor, code: int | None = None) -> Tensor:
        """Apply the operator's fused activation (ActivationFunctionType) to `tensor`."""
        code = self.option("FusedActivationFunction", 0) if code is None else code
        net = self.network
        if code == 0:  # NONE
            return tensor
        if code == 1:  # RELU
            return net.add_activation(tensor, ActivationType.RELU, name=self.name).get_output(0)
        if code == 2:  # RELU_N1_TO_1
            return net.add_activation(tensor, ActivationType.CLIP, -1.0, 1.0, name=self.name).get_output(0)
        if code == 3:  # RELU6
            return net.add_activation(tensor, ActivationType.CLIP, 0.0, 6.0, name=self.name).get_output(0)
        if code == 4:  # TANH
            return net.add_activation(tensor, ActivationType.TANH, name=self.name).get_output(0)
        raise self.error(f"its fused activation function (code {code}, SIGN_BIT) is not supported")

    def transpose(self, tensor: Tensor, permutation) -> Tensor:
        return self.network.add_shuffle(tensor, first_transpose=tuple(permutation), name=self.name).get_output(0)

    def to_nchw(self, tensor: Tensor) -> Tensor:
        return self.transpose(tensor, NHWC_TO_NCHW)

    def to_nhwc(self, tensor: Tensor) -> Tensor:
        return self.transpose(tensor, NCHW_TO_NHWC)

    def reshape(self, tensor: Tensor, shape) -> Tensor:
        return self.network.add_shuffle(tensor, reshape_dims=tuple(int(d) for d in shape),
                                        name=self.name).get_output(0)

    def cast(self, tensor: Tensor, dtype: DataType) -> Tensor:
        if tensor.dtype == dtype:
            return tensor
        return self.network.add_cast(tensor, dtype, name=self.name).get_output(0)

    def output_dtype(self, position: int = 0) -> DataType:
        """The IR dtype of output `position`: float32 where TFLite quantizes it (tensorkiln computes in float)."""
        record = self.output_record(position)
        if record.is_quantized:
            return DataType.FLOAT
        return DataType.from_numpy(record.dtype)

    def axis(self, axis: int, rank: int) -> int:
        if not -rank <= axis < rank:
            raise self.error(f"axis {axis} is out of range for a tensor of rank {rank}")
        return axis % rank

    # ---- errors ----------------------------------------------------------------------------------
    def error(self, message: str) -> ConversionError:
        return ConversionError(f"{self.op.describe()}, output {self.name!r}: {message}")
