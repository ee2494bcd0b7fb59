"""Fused pointwise chains (ops.FusedPointwise) as generated Triton kernels.

triton.jit compiles a function from its source text, so a program is turned into the source of one kernel, written
to a file in a cache directory (named by the hash of the text) and imported from there. Nothing of the program is
ever evaluated: it is parsed by the reference parser (kernels/cpu/fused.py), and each instruction is rendered from
a fixed table of expression templates keyed by its opcode enum; operand names are checked against the names the
parser produced, and the only numbers written into the source are floats that went through float().

The kernel walks the output in its memory order (channels_last when the inputs are) in blocks of BLOCK elements.
An input laid out like the output is read at the linear offset; any other (broadcast, permuted) input is read
through per-dim strides (0 where it broadcasts) from coordinates computed once per element. Math is FP32.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import re
from pathlib import Path

import torch
import triton

from ....ir import ops
from ....ir.ops import ElementWiseOperation as E
from ....ir.ops import UnaryOperation as U
from ....ir.shape_rules import broadcast_shapes
from ...cpu.fused import format_instruction, parse_program
from .epilogue import ACTIVATION_CODES

CACHE_ENV = "TENSORKILN_TRITON_CACHE"

# fp32 tensors `a`, `b` -> expression; the templates are the only code a program can select
_BINARY = {
    E.SUM: "{a} + {b}", E.SUB: "{a} - {b}", E.PROD: "{a} * {b}", E.DIV: "{a} / {b}",
    # NaN wins, as in ONNX Max/Min (tl.maximum alone returns the other operand on a GPU)
    E.MAX: "tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)",
    E.MIN: "tl.minimum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)", E.POW: "_pow({a}, {b})",
    E.MOD: "_remainder({a}, {b})",  # sign of the divisor, as torch.remainder
    E.FMOD: "_fmod({a}, {b})",  # sign of the dividend, as torch.fmod
}
_UNARY = {
    U.EXP: "tl.exp({a})", U.LOG: "tl.log({a})", U.SQRT: "tl.sqrt({a})", U.RECIP: "1.0 / {a}", U.ABS: "tl.abs({a})",
    U.NEG: "-{a}", U.ERF: "tl.erf({a})", U.SIN: "tl.sin({a})", U.COS: "tl.cos({a})",
    U.TAN: "tl.sin({a}) / tl.cos({a})", U.SINH: "0.5 * (tl.exp({a}) - tl.exp(-{a}))",
    U.COSH: "0.5 * (tl.exp({a}) + tl.exp(-{a}))",
    U.ASINH: "tl.where({a} < 0, -1.0, 1.0) * tl.log(tl.abs({a}) + tl.sqrt({a} * {a} + 1.0))",
    U.ACOSH: "tl.log({a} + tl.sqrt({a} * {a} - 1.0))", U.ATANH: "0.5 * tl.log((1.0 + {a}) / (1.0 - {a}))",
    U.FLOOR: "tl.floor({a})", U.CEIL: "tl.ceil({a})", U.ROUND: "_round_half_even({a})",
    U.SIGN: "tl.where({a} > 0, 1.0, tl.where({a} < 0, -1.0, {a}))",
}

_HELPERS = '''
@triton.jit
def _trunc(x):
    return tl.where(x < 0, tl.ceil(x), tl.floor(x))


@triton.jit
def _round_half_even(x):
    r = tl.floor(x + 0.5)
    return tl.where((r - x == 0.5) & (r - 2.0 * tl.floor(r * 0.5) == 1.0), r - 1.0, r)


@triton.jit
def _fmod(a, b):
    # C's fmod (torch.fmod, onnxruntime's Mod with fmod=1): a finite a modulo an infinite b is a itself
    keep = (tl.abs(b) == float("inf")) & (tl.abs(a) < float("inf"))
    return tl.where(keep, a, a - b * _trunc(a / b))


@triton.jit
def _remainder(a, b):
    # torch.remainder: fmod, moved by b where its sign differs from b's
    r = _fmod(a, b)
    return tl.where((r != 0) & ((b < 0) != (r < 0)), r + b, r)


@triton.jit
def _pow(a, b):
    # |a|^b through exp and log, then C's rules of pow (torch.pow, onnxruntime): a negative base (the sign bit: -0
    # too) needs an integer exponent, except -0 and -inf, whose powers are those of +0 and +inf up to the sign;
    # (-1)^(+-inf) = 1; a^0 = 1 and 1^b = 1, even for NaN
    magnitude = tl.exp(b * tl.log(tl.abs(a)))
    integral = b == tl.floor(b)
    odd = integral & (b - 2.0 * tl.floor(b * 0.5) == 1.0)
    signed = tl.where(odd, -magnitude, magnitude)
    negative = a.to(tl.int32, bitcast=True) < 0
    any_exponent = integral | (a == 0) | (a == float("-inf"))
    result = tl.where(negative, tl.where(any_exponent, signed, float("nan")), magnitude)
    result = tl.where((a == -1.0) & (tl.abs(b) == float("inf")), 1.0, result)
    return tl.where((b == 0) | (a == 1.0), 1.0, result)
'''
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)  # checked again here: names become variables


def unsupported_reason(program: tuple[str, ...]) -> str | None:
    """Why the Triton kernel cannot run `program` (None: it can): it must parse (the parser admits only identifiers,
    the opcode enums and numbers), and only float-valued opcodes have templates."""
    try:
        instructions, _ = parse_program(tuple(program))
    except ValueError as error:
        return str(error)
    for step in instructions:
        if isinstance(step.op, ops.ElementWise) and step.op.operation not in _BINARY:
            return f"opcode {step.op.operation.value!r} has no Triton template"
        if isinstance(step.op, ops.Unary) and step.op.operation not in _UNARY:
            return f"opcode {step.op.operation.value!r} has no Triton template"
        if not all(_NAME.fullmatch(name) for name in (step.target, *step.operands)):
            return f"instruction {step.target!r} uses a name that is not an identifier"
    return None


def _float_literal(value: float) -> str:
    value = float(value)
    return repr(value) if math.isfinite(value) else f'float("{value}")'


def _expression(step) -> str:
    names = {"a": f"v_{step.operands[0]}", "b": f"v_{step.operands[-1]}"}
    if isinstance(step.op, ops.ElementWise):
        return _BINARY[step.op.operation].format(**names)
    if isinstance(step.op, ops.Unary):
        return _UNARY[step.op.operation].format(**names)
    code = ACTIVATION_CODES[step.op.type]
    return f"apply_activation({names['a']}, {code}, {_float_literal(step.op.alpha)}, {_float_literal(step.op.beta)})"


def generate_source(program: tuple[str, ...], linear: tuple[bool, ...], rank: int) -> str:
    """The source of a module defining `fused_pointwise_kernel` for `program` over len(linear) inputs; input i is
    read at the linear offset where linear[i], else through its strides over `rank` coordinates."""
    reason = unsupported_reason(program)
    if reason is not None:
        raise ValueError(f"fused pointwise program cannot be compiled for Triton: {reason}")
    instructions, result = parse_program(tuple(program))
    count = len(linear)
    strides = [f"in{i}_stride{d}" for i in range(count) if not linear[i] for d in range(rank)]
    sizes = [f"size{d}" for d in range(1, rank)]
    params = ", ".join(["out_ptr"] + [f"in{i}_ptr" for i in range(count)] + ["numel"] + sizes + strides)
    body = ["    offs = tl.program_id(axis=0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)",
            "    mask = offs < numel"]
    if not all(linear):
        body.append("    rest = offs")
        for d in range(rank - 1, 0, -1):
            body += [f"    coord{d} = rest % size{d}", f"    rest = rest // size{d}"]
        body.append("    coord0 = rest")
    for i in range(count):
        offset = "offs" if linear[i] else " + ".join(f"coord{d} * in{i}_stride{d}" for d in range(rank))
        body.append(f"    v_in{i} = tl.load(in{i}_ptr + {offset}, mask=mask, other=0.0).to(tl.float32)")
    body += [f"    v_{step.target} = {_expression(step)}" for step in instructions]
    body.append(f"    tl.store(out_ptr + offs, v_{result}.to(out_ptr.dtype.element_ty), mask=mask)")
    # the program's text, re-rendered from the parsed instructions (never the file's own lines: those are untrusted)
    header = ["# generated by tensorkiln.kernels.cuda.triton.pointwise from the fused pointwise program:"]
    header += [f"#   {format_instruction(step)}" for step in instructions] + [f"#   out = {result}"]
    return "\n".join(header + [
        "import triton", "import triton.language as tl", "",
        "from tensorkiln.kernels.cuda.triton.epilogue import apply_activation", _HELPERS, "",
        "@triton.jit", f"def fused_pointwise_kernel({params}, BLOCK: tl.constexpr):", *body, ""])


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tensorkiln" / "triton_pointwise")


@functools.lru_cache(maxsize=1024)
def load_kernel(program: tuple[str, ...], linear: tuple[bool, ...], rank: int):
    """The jitted kernel of a program, from its source file in the cache directory (written when missing)."""
    source = generate_source(program, linear, rank)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    path = cache_dir() / f"pointwise_{digest}.py"
    if not path.is_file() or path.read_text() != source:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(source)
        os.replace(partial, path)  # atomic: concurrent builds never read half a file
    spec = importlib.util.spec_from_file_location(f"tensorkiln_pointwise_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fused_pointwise_kernel


def _memory_order(tensors: list[torch.Tensor], shape: torch.Size) -> tuple[int, ...]:
    """The dim order to walk: channels_last when a full-size input is stored that way, else row-major."""
    rank = len(shape)
    for tensor in tensors:
        if tensor.shape == shape and rank == 4 and not tensor.is_contiguous() \
                and tensor.is_contiguous(memory_format=torch.channels_last):
            return (0, 2, 3, 1)
    return tuple(range(rank))


def fused_pointwise(program: tuple[str, ...], inputs: list[torch.Tensor], block: int = 1024,
                    num_warps: int = 4) -> torch.Tensor:
    """Run a fused pointwise program on `inputs` (numpy broadcasting); the result has the promoted dtype."""
    shape = broadcast_shapes(*(t.shape for t in inputs))
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in inputs))
    order = _memory_order(inputs, shape)
    walk_shape = [shape[d] for d in order] or [1]
    views = [t.expand(shape).permute(order).reshape(walk_shape) for t in inputs]
    out_walk = torch.empty(walk_shape, dtype=dtype, device=inputs[0].device)
    out = out_walk.reshape([shape[d] for d in order]).permute(tuple(order.index(d) for d in range(len(shape))))
    numel = out_walk.numel()
    if numel == 0:
        return out
    linear = tuple(v.is_contiguous() for v in views)
    kernel = load_kernel(tuple(program), linear, len(walk_shape))
    strides = [s for v, flat in zip(views, linear) if not flat for s in v.stride()]
    kernel[(triton.cdiv(numel, block),)](out_walk, *views, numel, *walk_shape[1:], *strides, BLOCK=block,
                                         num_warps=num_warps)
    return out
