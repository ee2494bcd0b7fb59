"""Layer kinds the graph optimizer creates: recognized patterns (passes/recognize_*.py) and fused layers
(passes/fuse_vertical.py, passes/fuse_pointwise.py)."""
from __future__ import annotations

from .base import Ints, OpAttrs, op
from .enums import ActivationType


# ---- layers recognized by the graph optimizer (passes/recognize_*.py) -------------------------------------
@op("rms_norm")
class RMSNorm(OpAttrs):
    """inputs: x, optional scale; x / sqrt(mean(x^2) + epsilon) * scale over the dims from `axis` to the end."""
    axis: int = -1
    epsilon: float = 1e-6


@op("attention")
class Attention(OpAttrs):
    """inputs: q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv], optional additive mask (broadcast to
    [..., Sq, Sk]); softmax(q @ k^T * scale + mask) @ v, and a causal mask on top where `causal`.
    `nan_to_zero`: a probability that is NaN counts as 0 (the exporters' guard Where(IsNaN(p), 0, p)), so a row whose
    every key is masked gives zeros, not NaN. `grouped_kv`: k and v have fewer heads (dim -3) than q, each read by
    Hq / Hkv consecutive query heads (grouped-query and multi-query attention)."""
    scale: float = 1.0
    has_mask: bool = False
    causal: bool = False
    nan_to_zero: bool = False
    grouped_kv: bool = False


# ---- fused layers (passes/fuse_vertical.py, passes/fuse_pointwise.py) ------------------------------------
# Every fused producer carries the same epilogue fields (flat, so the plan serializer needs nothing new):
#   y = post_activation(activation(op(x) + bias) + residual)
# `activation` / `post_activation` use alpha/beta as ops.Activation does; `prelu` makes the first activation a
# PReLU whose slope is an extra input. Inputs are always five: x, weights, bias|None, residual|None, slope|None.
# (Written out in each class, not inherited: the producer's own attributes come first, positionally.)
# `residual_in_place` (convolution and matrix product only) is set by the builder (plan/in_place.py) where the
# residual dies at this layer and the chosen kernel may write its output over it: the two share bytes.
# `int8_input_scale` (convolution and matrix product only; 0: none) is set by the INT8 build on the CUDA target
# (passes/quantize_int8.py): the layer computes on x quantized at that scale (a quantize-dequantize step before it
# leaves x on that grid; where the builder removes the step, plan/integer_links.py, the kernels quantize x), and
# two more inputs follow the five, the weights as per-channel INT8 (a convolution's [K, R, S, C], channels last; a
# matrix product's b as [N, K]) and their float32 scales [K] / [N] (as int32 bits: never cast to a compute dtype),
# for the integer kernels (kernels/cuda/int8.py); the float kernels read the first five inputs only (the weights
# there are the same INT8 values times their scales). Between two such layers on integer kernels the builder may
# keep the activation INT8 (plan/integer_links.py): x is then an INT8 tensor (x * int8_input_scale is its value),
# and the producer's `int8_output_scale` (0: a float output) makes it store clip(round(y / scale), -128, 127).
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
    residual_in_place: bool = False
    int8_input_scale: float = 0.0
    int8_output_scale: float = 0.0


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
    residual_in_place: bool = False
    int8_input_scale: float = 0.0
    int8_output_scale: float = 0.0


@op("fused_matmul_layer_norm")
class FusedMatMulLayerNorm(OpAttrs):
    """A matrix product, its bias and residual add, and the LayerNorm over the last dim that reads it, as one layer
    (passes/fuse_matmul_layer_norm.py: a transformer's projection + residual + norm); inputs: a, b, bias|None,
    residual|None, scale, shift|None.  y = layer_norm(a @ b + bias + residual) * scale + shift. The residual sits
    at input 3 as in the other fused kinds, so `residual_in_place` (plan/in_place.py) means what it means there."""
    transpose_b: bool = False
    residual: bool = False
    epsilon: float = 1e-5
    residual_in_place: bool = False


@op("fused_add_layer_norm")
class FusedAddLayerNorm(OpAttrs):
    """An add and the LayerNorm over the last dim that reads it, as one layer (passes/fuse_add_layer_norm.py: a
    transformer's embeddings); inputs: x, addend (broadcast to x's shape), scale, shift|None.
    y = layer_norm(x + addend) * scale + shift."""
    epsilon: float = 1e-5


@op("fused_pointwise")
class FusedPointwise(OpAttrs):
    """A chain of elementwise, unary and activation layers as one layer. `program` is a tiny SSA text program,
    one instruction per entry, over the inputs in0, in1, ... with numpy broadcasting, e.g.
    ("t0 = mul in0 in1", "t1 = add t0 in2", "t2 = relu t1 0 0", "out = t2"). Opcodes are the lower-case values of
    ElementWiseOperation, UnaryOperation and ActivationType (activations take alpha and beta); the kernel parses
    it (never evaluates it as code)."""
    program: tuple[str, ...]
