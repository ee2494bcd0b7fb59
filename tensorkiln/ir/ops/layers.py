"""The layer kinds of the network definition API and of the ONNX and Caffe importers' common ops."""
from __future__ import annotations

from ..dtypes import DataType
from .base import Ints, OpAttrs, op
from .enums import (ActivationType, ElementWiseOperation, PaddingMode, PoolingType, ReduceOperation, ResizeMode,
                    ScaleMode, UnaryOperation)


@op("constant")
class Constant(OpAttrs):
    """No inputs; the output tensor carries the value (weights)."""


@op("identity")
class Identity(OpAttrs):
    pass


@op("convolution")
class Convolution(OpAttrs):
    """inputs: x [N, C, *spatial], kernel [K, C/groups, *k], optional bias [K]."""
    stride: Ints
    pads: Ints  # begin of each spatial dim, then end of each (ONNX order)
    dilation: Ints
    groups: int = 1


@op("deconvolution")
class Deconvolution(OpAttrs):
    """inputs: x [N, C, *spatial], kernel [C, K/groups, *k], optional bias [K]."""
    stride: Ints
    pads: Ints
    dilation: Ints
    output_padding: Ints
    groups: int = 1


@op("activation")
class Activation(OpAttrs):
    type: ActivationType
    alpha: float = 0.0
    beta: float = 0.0


@op("parametric_relu")
class ParametricReLU(OpAttrs):
    """inputs: x, slope (broadcast to x)."""


@op("unary")
class Unary(OpAttrs):
    operation: UnaryOperation


@op("elementwise")
class ElementWise(OpAttrs):
    """Binary operation with numpy broadcasting."""
    operation: ElementWiseOperation


@op("pooling")
class Pooling(OpAttrs):
    type: PoolingType
    kernel: Ints
    stride: Ints
    pads: Ints
    dilation: Ints
    ceil_mode: bool = False
    count_include_pad: bool = False  # average pooling: divide by the window size including padding
    p: int = 2  # LP pooling norm


@op("global_pooling")
class GlobalPooling(OpAttrs):
    """Reduces every spatial dim (all dims after the channel) to 1."""
    type: PoolingType
    p: int = 2


@op("lrn")
class LRN(OpAttrs):
    """Cross-channel local response normalization (ONNX / Caffe ACROSS_CHANNELS)."""
    size: int
    alpha: float
    beta: float
    bias: float


@op("matrix_multiply")
class MatrixMultiply(OpAttrs):
    """inputs: a, b; numpy matmul semantics after the optional transposes of the last two dims."""
    transpose_a: bool = False
    transpose_b: bool = False


@op("fully_connected")
class FullyConnected(OpAttrs):
    """inputs: x, weights [K, C], optional bias [K]; x is flattened from `axis` on (TensorRT/Caffe)."""
    axis: int = 1


@op("softmax")
class Softmax(OpAttrs):
    axis: int
    log: bool = False


@op("scale")
class Scale(OpAttrs):
    """out = (x * scale + shift) ** power; inputs: x, scale, shift, power (each may be omitted)."""
    mode: ScaleMode
    channel_axis: int = 1
    has_scale: bool = True
    has_shift: bool = True
    has_power: bool = False


@op("concatenation")
class Concatenation(OpAttrs):
    """`in_place` (set by the eliminate_concat pass) promises that each input is written by a layer whose only
    reader is this concatenation, that no input is a network input, output or constant, and that each input
    fills one contiguous byte range of the output, in input order: a memory planner may place the producers'
    outputs at those offsets inside the concatenation's buffer, and the copy then has nothing left to do."""
    axis: int
    in_place: bool = False


@op("shuffle")
class Shuffle(OpAttrs):
    """first_transpose, then reshape (fully resolved dims), then second_transpose; any may be None."""
    first_transpose: Ints | None = None
    reshape_dims: Ints | None = None
    second_transpose: Ints | None = None


@op("reduce")
class Reduce(OpAttrs):
    operation: ReduceOperation
    axes: Ints  # empty: every axis
    keep_dims: bool = True


@op("gather")
class Gather(OpAttrs):
    """inputs: data, indices (negative indices count from the end)."""
    axis: int = 0


@op("slice")
class Slice(OpAttrs):
    starts: Ints
    ends: Ints  # already clamped to the input shape
    axes: Ints
    steps: Ints


@op("split")
class Split(OpAttrs):
    axis: int
    sizes: Ints


@op("expand")
class Expand(OpAttrs):
    shape: Ints  # the broadcast output shape


@op("tile")
class Tile(OpAttrs):
    repeats: Ints


@op("cast")
class Cast(OpAttrs):
    to: DataType


@op("pad")
class Pad(OpAttrs):
    pads: Ints  # begin of every dim, then end of every dim (ONNX order); negative crops
    mode: PaddingMode = PaddingMode.CONSTANT
    value: float = 0.0


@op("resize")
class Resize(OpAttrs):
    mode: ResizeMode
    output_shape: Ints
    scales: tuple[float, ...]  # per dim; used by the coordinate transformation
    coordinate_transformation: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_coeff_a: float = -0.75
    exclude_outside: bool = False
    extrapolation_value: float = 0.0
    roi: tuple[float, ...] = ()


@op("layer_norm")
class LayerNorm(OpAttrs):
    """inputs: x, scale, optional bias; normalizes over the dims from `axis` to the end."""
    axis: int = -1
    epsilon: float = 1e-5


@op("select")
class Select(OpAttrs):
    """inputs: condition, then, else (ONNX Where)."""
