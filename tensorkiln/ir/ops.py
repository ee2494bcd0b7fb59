"""Layer kinds of the IR and their typed attributes.

Each layer kind is a frozen dataclass registered under a stable name (`KIND`). The dataclass holds the
attributes only; tensors (data and weights) are the layer's inputs. Enums name the variants of a family
(activation types, elementwise operations, ...) the way TensorRT's API does.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar

from .dtypes import DataType

OP_KINDS: dict[str, type["OpAttrs"]] = {}


def op(kind: str):
    """Register a frozen attribute dataclass as the IR layer kind `kind`."""

    def register(cls):
        if kind in OP_KINDS:
            raise ValueError(f"layer kind {kind!r} is registered twice")
        cls = dataclasses.dataclass(frozen=True)(cls)
        cls.KIND = kind
        OP_KINDS[kind] = cls
        return cls

    return register


class OpAttrs:
    KIND: ClassVar[str]


Ints = tuple[int, ...]


class ActivationType(enum.Enum):
    RELU = "relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    LEAKY_RELU = "leaky_relu"  # alpha: negative slope
    ELU = "elu"  # alpha
    SELU = "selu"  # alpha, beta (gamma)
    SOFTPLUS = "softplus"
    SOFTSIGN = "softsign"
    CLIP = "clip"  # alpha: min, beta: max
    HARD_SIGMOID = "hard_sigmoid"  # alpha * x + beta, clamped to [0, 1]
    HARD_SWISH = "hard_swish"
    SCALED_TANH = "scaled_tanh"  # alpha * tanh(beta * x)
    THRESHOLDED_RELU = "thresholded_relu"  # alpha: threshold
    GELU_ERF = "gelu_erf"
    GELU_TANH = "gelu_tanh"
    SILU = "silu"
    MISH = "mish"
    CELU = "celu"  # alpha


class UnaryOperation(enum.Enum):
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RECIP = "recip"
    ABS = "abs"
    NEG = "neg"
    ERF = "erf"
    SIN = "sin"
    COS = "cos"
    TAN = "tan"
    ASIN = "asin"
    ACOS = "acos"
    ATAN = "atan"
    SINH = "sinh"
    COSH = "cosh"
    ASINH = "asinh"
    ACOSH = "acosh"
    ATANH = "atanh"
    FLOOR = "floor"
    CEIL = "ceil"
    ROUND = "round"  # half to even, as ONNX
    SIGN = "sign"
    NOT = "not"
    BITWISE_NOT = "bitwise_not"
    ISNAN = "isnan"
    ISINF = "isinf"


class ElementWiseOperation(enum.Enum):
    SUM = "sum"
    SUB = "sub"
    PROD = "prod"
    DIV = "div"  # integer inputs: truncation toward zero, as ONNX
    POW = "pow"
    MAX = "max"
    MIN = "min"
    EQUAL = "equal"
    LESS = "less"
    LESS_OR_EQUAL = "less_or_equal"
    GREATER = "greater"
    GREATER_OR_EQUAL = "greater_or_equal"
    AND = "and"
    OR = "or"
    XOR = "xor"
    MOD = "mod"  # sign of the divisor, as Python
    FMOD = "fmod"  # sign of the dividend, as C
    BITWISE_AND = "bitwise_and"
    BITWISE_OR = "bitwise_or"
    BITWISE_XOR = "bitwise_xor"
    BIT_SHIFT_LEFT = "bit_shift_left"
    BIT_SHIFT_RIGHT = "bit_shift_right"


class PoolingType(enum.Enum):
    MAX = "max"
    AVERAGE = "average"
    LP = "lp"


class ReduceOperation(enum.Enum):
    SUM = "sum"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    PROD = "prod"
    L1 = "l1"
    L2 = "l2"
    LOG_SUM = "log_sum"
    LOG_SUM_EXP = "log_sum_exp"
    SUM_SQUARE = "sum_square"


class ScaleMode(enum.Enum):
    UNIFORM = "uniform"  # one coefficient for the whole tensor
    CHANNEL = "channel"  # one coefficient per channel (axis `channel_axis`)
    ELEMENTWISE = "elementwise"  # one coefficient per element (broadcast from the trailing dims)


class PaddingMode(enum.Enum):
    CONSTANT = "constant"
    REFLECT = "reflect"
    EDGE = "edge"
    WRAP = "wrap"


class ResizeMode(enum.Enum):
    NEAREST = "nearest"
    LINEAR = "linear"
    CUBIC = "cubic"


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


def attrs_of(kind: str) -> type[OpAttrs]:
    return OP_KINDS[kind]


# ---- indexing, sorting and scanning (ONNX coverage) ------------------------------------------------------
@op("arg_reduce")
class ArgReduce(OpAttrs):
    """Index (int64) of the largest (`largest`) or smallest value along `axis`."""
    axis: int
    largest: bool = True
    keep_dims: bool = True
    select_last_index: bool = False


@op("top_k")
class TopK(OpAttrs):
    """Outputs: values, int64 indices of the k largest (or smallest) along `axis`."""
    k: int
    axis: int = -1
    largest: bool = True
    sorted: bool = True


@op("cumulative_sum")
class CumulativeSum(OpAttrs):
    axis: int
    exclusive: bool = False
    reverse: bool = False


@op("einsum")
class Einsum(OpAttrs):
    equation: str


@op("gather_elements")
class GatherElements(OpAttrs):
    """inputs: data, indices (same rank; negative indices count from the end)."""
    axis: int = 0


@op("gather_nd")
class GatherND(OpAttrs):
    batch_dims: int = 0


@op("scatter_elements")
class ScatterElements(OpAttrs):
    """inputs: data, indices, updates; reduction: none, add, mul, max, min."""
    axis: int = 0
    reduction: str = "none"


@op("scatter_nd")
class ScatterND(OpAttrs):
    reduction: str = "none"


@op("one_hot")
class OneHot(OpAttrs):
    """inputs: indices, values [off, on]; a new axis of size `depth` at `axis`."""
    depth: int
    axis: int = -1


@op("trilu")
class Trilu(OpAttrs):
    upper: bool = True
    k: int = 0


@op("hardmax")
class Hardmax(OpAttrs):
    axis: int = -1


@op("group_norm")
class GroupNorm(OpAttrs):
    """inputs: x [N, C, ...], scale [C], bias [C]; instance normalization is num_groups == C."""
    num_groups: int
    epsilon: float = 1e-5


@op("grid_sample")
class GridSample(OpAttrs):
    mode: str = "bilinear"  # bilinear, nearest, bicubic
    padding_mode: str = "zeros"  # zeros, border, reflection
    align_corners: bool = False


@op("determinant")
class Determinant(OpAttrs):
    pass


@op("quantize_linear")
class QuantizeLinear(OpAttrs):
    """inputs: x, scale, zero point; y = saturate(round(x / scale) + zero_point) in the zero point's dtype."""
    axis: int = 1
    output_dtype: DataType = DataType.UINT8


@op("dequantize_linear")
class DequantizeLinear(OpAttrs):
    """inputs: x, scale, zero point; y = (x - zero_point) * scale."""
    axis: int = 1


@op("recurrent")
class Recurrent(OpAttrs):
    """ONNX LSTM / GRU / RNN. inputs: X, W, R, B, sequence_lens, initial_h, initial_c (LSTM), P (LSTM);
    outputs: Y [seq, directions, batch, hidden], Y_h, and Y_c for LSTM (layout 1 swaps seq and batch)."""
    cell: str  # "lstm", "gru" or "rnn"
    hidden_size: int
    direction: str = "forward"  # forward, reverse, bidirectional
    activations: tuple[str, ...] = ()
    activation_alpha: tuple[float, ...] = ()
    activation_beta: tuple[float, ...] = ()
    clip: float = 0.0  # 0: no clipping
    linear_before_reset: bool = False  # GRU
    input_forget: bool = False  # LSTM
    layout: int = 0


# ---- data-dependent output sizes (a dimension of -1 in the IR, sized at run time) --------------------------
@op("non_zero")
class NonZero(OpAttrs):
    """int64 [rank, count] indices of the non-zero elements."""
    DATA_DEPENDENT: ClassVar[bool] = True


@op("non_max_suppression")
class NonMaxSuppression(OpAttrs):
    """inputs: boxes [B, N, 4], scores [B, C, N]; output int64 [count, 3] of (batch, class, box)."""
    DATA_DEPENDENT: ClassVar[bool] = True
    max_output_boxes_per_class: int = 0
    iou_threshold: float = 0.0
    score_threshold: float | None = None
    center_point_box: bool = False


@op("unique")
class Unique(OpAttrs):
    """Outputs: unique values, first-occurrence indices, inverse indices, counts."""
    DATA_DEPENDENT: ClassVar[bool] = True
    axis: int | None = None
    sorted: bool = True


# ---- layers recognized by the graph optimizer (passes/recognize_*.py) -------------------------------------
@op("rms_norm")
class RMSNorm(OpAttrs):
    """inputs: x, optional scale; x / sqrt(mean(x^2) + epsilon) * scale over the dims from `axis` to the end."""
    axis: int = -1
    epsilon: float = 1e-6


@op("attention")
class Attention(OpAttrs):
    """inputs: q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv], optional additive mask (broadcast to
    [..., Sq, Sk]); softmax(q @ k^T * scale + mask) @ v, and a causal mask on top where `causal`."""
    scale: float = 1.0
    has_mask: bool = False
    causal: bool = False


# ---- custom layers and the fallback for ONNX operators without a converter -------------------------------
@op("plugin")
class Plugin(OpAttrs):
    """A custom layer (tensorkiln.plugins): `type` names the registered plugin class, `params_json` holds its
    parameters as canonical JSON. The engine stores only these two; the class is looked up when the engine
    is loaded, so an engine never carries code."""
    type: str
    params_json: str = "{}"
    data_dependent: bool = False  # some output size is known only at run time (DetectionOutput, Proposal)

    @property
    def DATA_DEPENDENT(self) -> bool:  # read by shape inference, as the ClassVar of other data-dependent kinds
        return self.data_dependent


@op("onnx_fallback")
class OnnxFallback(OpAttrs):
    """An ONNX node tensorkiln has no converter for, run by onnx's reference implementation (slow; only built
    with allow_fallback). `node` is the serialized NodeProto (base64): data, never code. Output shapes and
    dtypes were found at build time."""
    FALLBACK: ClassVar[bool] = True
    op_type: str
    node: str
    opset: int
    output_dtypes: tuple[DataType, ...]
    output_shapes: tuple[Ints, ...]


# ---- fused layers (passes/fuse_vertical.py, passes/fuse_pointwise.py) ------------------------------------
# Every fused producer carries the same epilogue fields (flat, so the plan serializer needs nothing new):
#   y = post_activation(activation(op(x) + bias) + residual)
# `activation` / `post_activation` use alpha/beta as ops.Activation does; `prelu` makes the first activation a
# PReLU whose slope is an extra input. Inputs are always five: x, weights, bias|None, residual|None, slope|None.
@op("fused_convolution")
class FusedConvolution(OpAttrs):
    """ops.Convolution + epilogue; inputs: x, kernel, bias|None, residual|None, prelu_slope|None."""
    stride: Ints
    pads: Ints
    dilation: Ints
    groups: int = 1
    activation: ActivationType | None = None
    alpha: float = 0.0
    beta: float = 0.0
    prelu: bool = False
    residual: bool = False
    post_activation: ActivationType | None = None
    post_alpha: float = 0.0
    post_beta: float = 0.0


@op("fused_deconvolution")
class FusedDeconvolution(OpAttrs):
    """ops.Deconvolution + epilogue; inputs: x, kernel, bias|None, residual|None, prelu_slope|None."""
    stride: Ints
    pads: Ints
    dilation: Ints
    output_padding: Ints
    groups: int = 1
    activation: ActivationType | None = None
    alpha: float = 0.0
    beta: float = 0.0
    prelu: bool = False
    residual: bool = False
    post_activation: ActivationType | None = None
    post_alpha: float = 0.0
    post_beta: float = 0.0


@op("fused_matmul")
class FusedMatMul(OpAttrs):
    """ops.MatrixMultiply + epilogue; inputs: a, b, bias|None (broadcast over the last dim), residual|None,
    prelu_slope|None. Fully connected layers and Gemm (matrix multiply + bias add) become this."""
    transpose_a: bool = False
    transpose_b: bool = False
    activation: ActivationType | None = None
    alpha: float = 0.0
    beta: float = 0.0
    prelu: bool = False
    residual: bool = False
    post_activation: ActivationType | None = None
    post_alpha: float = 0.0
    post_beta: float = 0.0


@op("fused_pointwise")
class FusedPointwise(OpAttrs):
    """A chain of elementwise, unary and activation layers as one layer. `program` is a tiny SSA text program,
    one instruction per entry, over the inputs in0, in1, ... with numpy broadcasting, e.g.
    ("t0 = mul in0 in1", "t1 = add t0 in2", "t2 = relu t1 0 0", "out = t2"). Opcodes are the lower-case values of
    ElementWiseOperation, UnaryOperation and ActivationType (activations take alpha and beta); the kernel parses
    it (never evaluates it as code)."""
    program: tuple[str, ...]


# ---- ONNX coverage: attention, signal processing, sampling, quantized products (importers/onnx/ops) ---------
@op("onnx_attention")
class OnnxAttention(OpAttrs):
    """ONNX Attention (opsets 23 to 25). inputs: Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen
    (each optional after V); outputs: Y, present_key, present_value, qk_matmul_output. 3-D inputs are
    [batch, seq, heads * head_size] and need the head counts."""
    scale: float | None = None  # None: 1 / sqrt(head_size)
    is_causal: bool = False
    q_num_heads: int | None = None
    kv_num_heads: int | None = None
    softcap: float | None = None
    qk_matmul_output_mode: int = 0  # 0: q @ k^T, 1: softcapped, 2: plus mask, 3: after softmax
    softmax_precision: DataType | None = None
    left_window: int = -1  # -1: unbounded
    right_window: int = -1


@op("rotary_embedding")
class RotaryEmbedding(OpAttrs):
    """inputs: x [B, H, S, D] or [B, S, H * D], cos_cache, sin_cache, optional position_ids."""
    num_heads: int = 0
    rotary_dim: int = 0  # 0: the whole head
    interleaved: bool = False


@op("cumulative_product")
class CumulativeProduct(OpAttrs):
    axis: int
    exclusive: bool = False
    reverse: bool = False


@op("compress")
class Compress(OpAttrs):
    """inputs: data, condition (bool, 1-D); keeps the slices where condition holds; axis None flattens."""
    DATA_DEPENDENT: ClassVar[bool] = True
    axis: int | None = None


@op("reverse_sequence")
class ReverseSequence(OpAttrs):
    """inputs: x, sequence_lens [batch]; reverses the first sequence_lens[b] steps along time_axis."""
    batch_axis: int = 1
    time_axis: int = 0


@op("dft")
class DFT(OpAttrs):
    """Input [..., 1 or 2] (real or complex as a trailing pair); output [..., 2]."""
    axis: int
    length: int
    inverse: bool = False
    onesided: bool = False


@op("stft")
class STFT(OpAttrs):
    """inputs: signal [B, L, 1 or 2], optional window [frame_length]; output [B, frames, bins, 2]."""
    frame_step: int
    frame_length: int
    onesided: bool = True


@op("col2im")
class Col2Im(OpAttrs):
    """input [N, C * prod(block), L]; output [N, C, *image]: sums the columns back into the image."""
    image_shape: Ints
    block_shape: Ints
    dilations: Ints
    pads: Ints
    strides: Ints


@op("affine_grid")
class AffineGrid(OpAttrs):
    """input theta [N, 2, 3] or [N, 3, 4]; output the sampling grid [N, *size[2:], 2 or 3]."""
    size: Ints
    align_corners: bool = False


@op("max_unpool")
class MaxUnpool(OpAttrs):
    """inputs: x, indices (flat positions in the whole unpooled tensor of `pooled_shape`, as MaxPool gives
    them); that tensor is then zero-padded at the end of each dim to `output_shape`."""
    pooled_shape: Ints
    output_shape: Ints


@op("roi_align")
class RoiAlign(OpAttrs):
    """inputs: x [N, C, H, W], rois [R, 4], batch_indices [R]; output [R, C, output_height, output_width]."""
    output_height: int = 1
    output_width: int = 1
    sampling_ratio: int = 0
    spatial_scale: float = 1.0
    mode: str = "avg"  # avg or max
    half_pixel: bool = True


@op("tensor_scatter")
class TensorScatter(OpAttrs):
    """inputs: past_cache, update, optional write_indices [batch]; writes update into the cache along axis."""
    axis: int = -2
    circular: bool = False


@op("bitcast")
class BitCast(OpAttrs):
    to: DataType


@op("dynamic_quantize_linear")
class DynamicQuantizeLinear(OpAttrs):
    """outputs: y (uint8), y_scale, y_zero_point, from the input's range extended to include zero."""


@op("qlinear_matmul")
class QLinearMatMul(OpAttrs):
    """inputs: a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point."""


@op("qlinear_conv")
class QLinearConv(OpAttrs):
    """inputs: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, optional bias (int32)."""
    stride: Ints
    pads: Ints
    dilation: Ints
    groups: int = 1


@op("linear_attention")
class LinearAttention(OpAttrs):
    """inputs: query, key, value [B, T, H * D], past_state, decay, beta; outputs: output, present_state."""
    q_num_heads: int
    kv_num_heads: int
    scale: float = 0.0  # 0: 1 / sqrt(d_k)
    update_rule: str = "gated_delta"  # linear, gated, delta, gated_delta


@op("causal_conv_with_state")
class CausalConvWithState(OpAttrs):
    """inputs: input [B, C, L], weight [C, 1, k], bias, past_state [B, C, k - 1]; outputs: output, present_state."""
    activation: str = "none"  # none, silu, swish


@op("deform_conv")
class DeformConv(OpAttrs):
    """inputs: x, w, offset, optional bias, optional mask (ONNX DeformConv, 2-D)."""
    stride: Ints
    pads: Ints
    dilation: Ints
    groups: int = 1
    offset_groups: int = 1


@op("resize_antialias")
class ResizeAntialias(OpAttrs):
    """ONNX Resize with antialias=1 (linear or cubic): when downsampling, the interpolation filter is stretched
    by 1 / scale so that every input pixel contributes. Attributes as `resize`."""
    mode: ResizeMode
    output_shape: Ints
    scales: tuple[float, ...]
    coordinate_transformation: str = "half_pixel"
    cubic_coeff_a: float = -0.75
    exclude_outside: bool = False
    extrapolation_value: float = 0.0
    roi: tuple[float, ...] = ()


@op("max_roi_pool")
class MaxRoiPool(OpAttrs):
    """inputs: x [N, C, H, W], rois [R, 5] of (batch index, x1, y1, x2, y2); Fast R-CNN's ROI max pooling (bins of
    whole pixels, ROI corners rounded half away from zero)."""
    pooled_height: int
    pooled_width: int
    spatial_scale: float = 1.0
