"""Layer kinds for ONNX coverage beyond the common ops: indexing, sorting and scanning, data-dependent output
sizes, attention, signal processing, sampling and quantized products (importers/onnx/ops)."""
from __future__ import annotations

from typing import ClassVar

from ..dtypes import DataType
from .base import Ints, OpAttrs, op
from .enums import ResizeMode


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
