"""Fused layers (made by passes/fuse_vertical.py and passes/fuse_pointwise.py): the reference semantics.

A fused producer computes  y = post_activation(activation(op(x) + bias) + residual)  with the activation a PReLU
where `prelu` is set. The producer is the unfused layer's kernel (on NHWC inputs, a convolution runs through oneDNN
with its weight packed once instead); the epilogue works in place on the producer's fresh result, with the
activation kernels' semantics. Faster targets implement the same contract in one kernel.

A fused pointwise layer runs its `program` (see ops.FusedPointwise): a few lines of SSA text, parsed once per
distinct program into (output, kernel, op, operand names) tuples; nothing in it is ever evaluated as code.
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...ir import ops
from ...ir.ops import ActivationType, ElementWiseOperation, UnaryOperation
from ...ir.shape_rules import broadcast_shapes
from ..registry import kernel
from .activation import activation as activation_kernel
from .activation import parametric_relu, unary as unary_kernel
from .conv import convolution, deconvolution, split_pads
from .int8_io import dequantized_input, quantized_output
from .elementwise import elementwise as elementwise_kernel
from .linalg import matrix_multiply
from .onednn_post_ops import onednn_convolution, plan_post_ops, residual_fits


def _activate(type_: ActivationType | None, alpha: float, beta: float, y: torch.Tensor) -> torch.Tensor:
    """The activation, in place for the common ones (`y` is always a fresh result the kernel owns)."""
    if type_ is ActivationType.RELU:
        return y.relu_()
    if type_ is ActivationType.CLIP and y.is_floating_point():
        return y.clamp_(alpha, beta)
    return y if type_ is None else activation_kernel(ops.Activation(type_, alpha, beta), [y])[0]


def _add(y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    # in place where nothing is promoted or broadcast to a larger shape: saves a pass over memory per layer
    if other.dtype == y.dtype and broadcast_shapes(y.shape, other.shape) == y.shape:
        return y.add_(other)
    return y + other


def _per_channel(y: torch.Tensor, slope: torch.Tensor) -> bool:
    """Whether `slope`, broadcast numpy-style against y [N, C, ...], holds one value per channel (or one in all)."""
    if slope.dim() > y.dim() or y.dim() < 2 or slope.dtype != y.dtype:
        return False
    shape = (1,) * (y.dim() - slope.dim()) + tuple(slope.shape)
    return all(d == 1 for i, d in enumerate(shape) if i != 1) and shape[1] in (1, y.shape[1])


def _prelu(y: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    if _per_channel(y, slope):
        return F.prelu(y, slope.reshape(-1))  # torch's own kernel: one pass, no temporaries
    return parametric_relu(None, [y, slope])[0]


def apply_epilogue(op, y: torch.Tensor, residual: torch.Tensor | None, slope: torch.Tensor | None) -> torch.Tensor:
    """The part after the producer and its bias: activation or PReLU, residual add, post activation. `y` must be a
    fresh tensor: the common activations and the residual add write into it."""
    if op.prelu:
        y = _prelu(y, slope)
    else:
        y = _activate(op.activation, op.alpha, op.beta, y)
    if op.residual:
        y = _add(y, residual)
    return _activate(op.post_activation, op.post_alpha, op.post_beta, y)


def _five(inputs) -> list:
    return (list(inputs) + [None] * 5)[:5]


@kernel(ops.FusedConvolution)
def fused_convolution(op: ops.FusedConvolution, inputs):
    x, weight, bias, residual, slope = _five(inputs)
    x = dequantized_input(op, x, weight.dtype)  # an INT8 input between integer layers (int8_io.py)
    # The activation is never handed to oneDNN as a post-op: its ReLU (and its leaky ReLU with slope 0) is a max
    # with 0 that turns NaN into 0, where ONNX's Relu, onnxruntime and torch.relu_ keep NaN. The in-place relu_ of the
    # epilogue costs one pass over the output (within the noise of 2-core timings of ResNet-sized layers).
    y, rest = _onednn_convolution(op, x, weight, bias, residual)  # rest: the epilogue oneDNN left (post-ops)
    if y is None:
        y = convolution(ops.Convolution(op.stride, op.pads, op.dilation, op.groups), [x, weight, bias])[0]
    return [quantized_output(op, apply_epilogue(rest, y, residual, slope))]


def _two_dimensional(op, inputs) -> bool:
    return inputs[0] is not None and len(inputs[0].shape) == 4


@kernel(ops.FusedConvolution, impl="torch_direct", supports=_two_dimensional)
def fused_convolution_direct(op: ops.FusedConvolution, inputs):
    """The same layer through torch's own convolution, which picks its backend per call (oneDNN reordering the
    weight each time, or its im2col GEMM for small layers) instead of the packed oneDNN path: faster on some small
    layers (a 1x1 convolution of 32 to 200 channels on 2x96: 22 against 42 us), slower on others; the tactic timer
    decides per layer."""
    x, weight, bias, residual, slope = _five(inputs)
    x = dequantized_input(op, x, weight.dtype)  # an INT8 input between integer layers (int8_io.py)
    y = convolution(ops.Convolution(op.stride, op.pads, op.dilation, op.groups), [x, weight, bias])[0]
    return [quantized_output(op, apply_epilogue(op, y, residual, slope))]


# ---- the CPU fast path: oneDNN with the weight packed once ----------------------------------------------------
_PACKED = "_tensorkiln_onednn_packed"  # attribute of a weight tensor: {(input shape, conv params): packed weight}


@functools.cache
def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _onednn_convolution(op, x, weight, bias, residual=None) -> tuple[torch.Tensor | None, ops.FusedConvolution]:
    """A 2-D FP32 convolution of an NHWC (channels-last) input on the CPU by oneDNN, with the weight reordered into
    oneDNN's blocked layout once per input shape (F.conv2d reorders it on every call; onnxruntime's MLAS likewise
    packs its weights once); the result is NHWC too. The packed copy is kept on the weight tensor, so it lives
    exactly as long as the engine's weights (and doubles their memory). None where this path does not apply: NCHW
    inputs (an engine runs NHWC when its plan says channels_last), other devices, dtypes or ranks, asymmetric pads,
    autograd; the plain torch convolution runs instead. The results agree with it to float32 rounding. With the
    result, the layer with the epilogue stages that oneDNN computed taken out (onednn_post_ops.py), or `op`."""
    begin, end = split_pads(op.pads)
    floats = all(t is None or t.dtype is torch.float32 for t in (x, weight, bias))
    if x.device.type != "cpu" or x.dim() != 4 or begin != end or not floats or torch.is_grad_enabled():
        return None, op
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last) or not _onednn_available():
        return None, op
    packed = packed_weight(weight, tuple(x.shape), op.stride, begin, op.dilation, op.groups)
    post = plan_post_ops(op, residual_fits(_output_shape(op, x, weight), residual))
    y = onednn_convolution(post, x, residual, packed, bias, list(begin), list(op.stride), list(op.dilation),
                           op.groups)
    return y, post.rest


def _output_shape(op, x: torch.Tensor, weight: torch.Tensor) -> tuple[int, ...]:
    """The NCHW shape of a 2-D convolution's result (symmetric pads)."""
    sizes = [(size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1 for size, pad, dilation, kernel, stride
             in zip(x.shape[2:], op.pads[:2], op.dilation, weight.shape[2:], op.stride)]
    return (x.shape[0], weight.shape[0], *sizes)


def packed_weight(weight: torch.Tensor, input_shape: tuple[int, ...], stride, padding, dilation, groups: int):
    """`weight` reordered into oneDNN's blocked layout for a convolution of inputs of `input_shape`, made once and
    kept on the weight tensor (shared by every context of the engine, freed with its weights). oneDNN picks the
    layout for the thread count in force: a weight packed for 2 threads and run on 1 is reordered again on every call
    (ResNet-50 on one thread: 164 ms against 63), so the count is part of the key."""
    key = (tuple(input_shape), tuple(stride), tuple(padding), tuple(dilation), groups, torch.get_num_threads())
    packed = getattr(weight, _PACKED, None)
    if packed is None:
        packed = {}
        setattr(weight, _PACKED, packed)
    if key not in packed:
        packed[key] = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.contiguous().to_mkldnn(), list(padding), list(stride), list(dilation), groups, list(input_shape))
    return packed[key]


@kernel(ops.FusedDeconvolution)
def fused_deconvolution(op: ops.FusedDeconvolution, inputs):
    x, weight, bias, residual, slope = _five(inputs)
    plain = ops.Deconvolution(op.stride, op.pads, op.dilation, op.output_padding, op.groups)
    y = deconvolution(plain, [x, weight, bias])[0]
    return [apply_epilogue(op, y, residual, slope)]


@kernel(ops.FusedMatMul)
def fused_matmul(op: ops.FusedMatMul, inputs):
    a, b, bias, residual, slope = _five(inputs)
    a = dequantized_input(op, a, b.dtype)  # an INT8 input between integer layers (int8_io.py)
    y = matrix_multiply(ops.MatrixMultiply(op.transpose_a, op.transpose_b), [a, b])[0]
    if bias is not None:
        y = _add(y, bias)  # broadcast over the last dim
    return [quantized_output(op, apply_epilogue(op, y, residual, slope))]


# ---- fused pointwise programs ------------------------------------------------------------------------------
class Instruction(NamedTuple):
    target: str
    fn: object  # a kernel: fn(op, inputs) -> [tensor]
    op: ops.OpAttrs
    operands: tuple[str, ...]


_BINARY = {e.value: e for e in ElementWiseOperation}
_UNARY = {u.value: u for u in UnaryOperation}
_ACTIVATIONS = {a.value: a for a in ActivationType}
# Programs come from engine files, which anyone can edit: they are parsed into this closed vocabulary (opcodes from
# the three enums, identifiers, numbers through float()) and everything else is refused, so that code generated from
# the instructions (kernels/cuda/triton/pointwise.py) can hold only what the vocabulary allows.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_INPUT = re.compile(r"in(0|[1-9][0-9]*)", re.ASCII)  # in0, in1, ...: the layer's inputs (no leading zeros)
MAX_NAME_LENGTH = 64
RESULT = "out"
MAX_LINE_LENGTH = 512  # the longest instruction: three names of MAX_NAME_LENGTH, an opcode, two floats
MAX_SHOWN = 80  # characters of program text quoted in an error message


def _shown(text) -> str:
    """A program's text in a message: quoted, and cut short (a line can be megabytes long)."""
    shown = repr(text)
    return shown if len(shown) <= MAX_SHOWN else shown[:MAX_SHOWN - 3] + "..."


def _tokens(line) -> list[str]:
    # printable ASCII only: no newline, tab or other character a line of generated source could be split at
    if not isinstance(line, str) or not line.isascii() or not line.isprintable():
        raise ValueError(f"fused pointwise instruction {_shown(line)} holds characters other than printable ASCII")
    if len(line) > MAX_LINE_LENGTH:
        raise ValueError(f"fused pointwise instruction {_shown(line)} is {len(line)} characters long, more than the "
                         f"{MAX_LINE_LENGTH} an instruction may be")
    return line.split()


def _name(token: str, line: str) -> str:
    if len(token) > MAX_NAME_LENGTH or not _NAME.fullmatch(token):
        raise ValueError(f"fused pointwise instruction {_shown(line)}: {_shown(token)} is not a name (letters, "
                         "digits, _)")
    return token


def _instruction(line: str, defined: set[str]) -> Instruction:
    words = _tokens(line)
    if len(words) < 3 or words[1] != "=":
        raise ValueError(f"fused pointwise instruction {_shown(line)} is not of the form 'name = opcode operands'")
    target, opcode, args = _name(words[0], line), words[2], tuple(words[3:])
    if target in defined or target == RESULT or _INPUT.fullmatch(target):
        raise ValueError(f"fused pointwise instruction {_shown(line)} assigns {_shown(target)}, which is an input, "
                         "the result or already assigned (programs assign each name once)")
    if opcode in _BINARY and len(args) == 2:
        instruction = Instruction(target, elementwise_kernel, ops.ElementWise(_BINARY[opcode]), args)
    elif opcode in _UNARY and len(args) == 1:
        instruction = Instruction(target, unary_kernel, ops.Unary(_UNARY[opcode]), args)
    elif opcode in _ACTIVATIONS and len(args) in (1, 3):
        try:
            alpha, beta = (float(args[1]), float(args[2])) if len(args) == 3 else (0.0, 0.0)
        except ValueError:
            raise ValueError(f"fused pointwise instruction {_shown(line)}: alpha and beta must be numbers") from None
        instruction = Instruction(target, activation_kernel, ops.Activation(_ACTIVATIONS[opcode], alpha, beta),
                                  args[:1])
    else:
        raise ValueError(f"fused pointwise instruction {_shown(line)}: unknown opcode {_shown(opcode)} or wrong "
                         "operand count")
    for operand in instruction.operands:
        _check_defined(_name(operand, line), defined, line)
    return instruction


def _check_defined(name: str, defined: set[str], line: str) -> None:
    if name not in defined and not _INPUT.fullmatch(name):
        raise ValueError(f"fused pointwise instruction {_shown(line)} reads {_shown(name)} before it is defined")


@functools.lru_cache(maxsize=4096)
def parse_program(program: tuple[str, ...]) -> tuple[tuple[Instruction, ...], str]:
    """(instructions, name of the result) of a program whose last line is `out = NAME`. ValueError for anything
    outside the vocabulary: each line `name = opcode operand...` in printable ASCII, opcodes of the three enums with
    their operand counts, names that are identifiers assigned once and defined before they are read."""
    if not isinstance(program, tuple) or not program:
        raise ValueError("fused pointwise program is empty")
    words = _tokens(program[-1])
    if len(words) != 3 or words[:2] != [RESULT, "="]:
        raise ValueError(f"fused pointwise program must end with 'out = NAME', not {_shown(program[-1])}")
    defined: set[str] = set()
    instructions = []
    for line in program[:-1]:
        instructions.append(_instruction(line, defined))
        defined.add(instructions[-1].target)
    result = _name(words[2], program[-1])
    if result not in defined and not _INPUT.fullmatch(result):
        raise ValueError(f"fused pointwise program returns {_shown(result)}, which it never defines")
    return tuple(instructions), result


def program_inputs(program: tuple[str, ...]) -> int:
    """How many inputs a (valid) program reads at least: one more than the highest `inN` it names."""
    instructions, result = parse_program(program)
    names = [result, *(name for step in instructions for name in step.operands)]
    return 1 + max((int(name[2:]) for name in names if _INPUT.fullmatch(name)), default=-1)


def format_instruction(step: Instruction) -> str:
    """An instruction as program text, rendered from its parsed parts (names, an enum's value, floats)."""
    op = step.op
    if isinstance(op, ops.Activation):
        return f"{step.target} = {op.type.value} {step.operands[0]} {float(op.alpha)!r} {float(op.beta)!r}"
    return " ".join([step.target, "=", op.operation.value, *step.operands])


@kernel(ops.FusedPointwise)
def fused_pointwise(op: ops.FusedPointwise, inputs):
    instructions, result = parse_program(op.program)
    env = {f"in{i}": t for i, t in enumerate(inputs)}
    for step in instructions:
        try:
            operands = [env[name] for name in step.operands]
        except KeyError as missing:
            raise ValueError(f"fused pointwise program reads {missing.args[0]!r} before it is defined") from None
        env[step.target] = step.fn(step.op, operands)[0]
    return [env[result]]
