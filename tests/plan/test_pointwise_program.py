"""Fused pointwise programs come from engine files, so their parser is the vocabulary of the Triton source generated
from them: fuzzed here on arbitrary text and on near-valid programs, every program either raises ValueError or parses
into instructions whose rendering holds only identifiers, an opcode and numbers; the generated source holds nothing
else of the program, and its only imports are its own."""
from __future__ import annotations

import ast
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorkiln.ir.ops import ActivationType, ElementWiseOperation, UnaryOperation
from tensorkiln.kernels.cpu.fused import format_instruction, parse_program

NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
NUMBER = r"(-?[0-9]+\.[0-9]+(e[+-][0-9]+)?|-?[0-9]+(\.[0-9]+)?e[+-][0-9]+|-?inf|nan)"  # repr() of a float
OPCODES = sorted({e.value for e in ElementWiseOperation} | {u.value for u in UnaryOperation}
                 | {a.value for a in ActivationType})
INSTRUCTION = re.compile(rf"{NAME} = ({'|'.join(OPCODES)})( {NAME})+( {NUMBER} {NUMBER})?", re.ASCII)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def assert_closed_vocabulary(program: tuple[str, ...]) -> None:
    """Either the parser refuses the program (ValueError), or every rendered instruction matches INSTRUCTION."""
    try:
        instructions, result = parse_program(program)
    except ValueError:
        return
    assert re.fullmatch(NAME, result, re.ASCII)
    rendered = tuple(format_instruction(step) for step in instructions) + (f"out = {result}",)
    for line in rendered[:-1]:
        assert INSTRUCTION.fullmatch(line), line
    reread, _ = parse_program(rendered)  # the rendering reads back as the same program
    assert tuple(format_instruction(step) for step in reread) + (f"out = {result}",) == rendered


# text a program line is made of: tokens of the vocabulary, and characters that matter to Python source
TOKENS = st.sampled_from(["t0", "t1", "in0", "in1", "out", "=", "0.5", "-1e9", "nan", "inf", "1_0", "0x10", *OPCODES,
                          "import", "os", "__import__('os')", "#", ";", "\\", "'", '"', "(", ")", "\n", "\r", "\t",
                          "\x0b", "\x0c", "\x00", "\u2028", "\u0085", "\uff49\uff4e0", "t\u03b1", "\u00a0", "a" * 70])
LINE = st.one_of(st.text(max_size=60), st.lists(TOKENS, min_size=1, max_size=8).map(" ".join),
                 st.lists(TOKENS, min_size=1, max_size=8).map("".join))


@FUZZ
@given(st.lists(LINE, min_size=0, max_size=5), st.sampled_from(["out = t0", "out = t1", "out = in0", None]))
def test_parse_program_admits_only_its_vocabulary(lines, last):
    assert_closed_vocabulary(tuple(lines) + ((last,) if last else ()))


ARITY = {**{e.value: 2 for e in ElementWiseOperation}, **{u.value: 1 for u in UnaryOperation},
         **{a.value: 1 for a in ActivationType}}
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["1", "-0", "1e400", "1_000", "0x1p3", "Infinity", "-nan", "1e", "."]))


@st.composite
def near_valid_programs(draw) -> tuple[str, ...]:
    """Programs of real opcodes with their operand counts, on names defined before (most of which parse), and now
    and then one operand too many or too few, or numbers in Python's looser spellings."""
    lines = []
    for index in range(draw(st.integers(1, 5))):
        opcode = draw(st.sampled_from(OPCODES))
        arity = ARITY[opcode] + draw(st.sampled_from([0] * 8 + [-1, 1]))
        names = ["in0", "in1", *(f"t{i}" for i in range(index))]
        operands = draw(st.lists(st.sampled_from(names), min_size=max(arity, 0), max_size=max(arity, 0)))
        numbers = draw(st.lists(NUMBERS, min_size=2, max_size=2)) if opcode in ARITY and draw(st.booleans()) else []
        lines.append(" ".join([f"t{index} = {opcode}", *operands, *numbers]))
    return (*lines, f"out = t{len(lines) - 1}")


@FUZZ
@given(near_valid_programs())
def test_near_valid_programs_render_in_the_vocabulary(program):
    """Programs of real opcodes, operand names and numbers render within the vocabulary."""
    assert_closed_vocabulary(program)


def test_the_issues_program_and_its_variants_are_refused():
    for line in ("t0 = div\nimport this", "t0 = div in0 in1\nimport this", "t0 = neg in0; import os",
                 "t0 = neg __import__('os')", "t0 = relu in0 __import__('os') 0", "t\u03b1 = neg in0",
                 "t0 = neg in0\u2028import os", "t0 = neg " + "a" * 100_000, "t0 = sum in0 in0" + " " * 100_000):
        with pytest.raises(ValueError, match="fused pointwise"):
            parse_program((line, "out = t0"))
    assert len(str(_error_of(("t0 = neg " + "a" * 100_000, "out = t0")))) < 400  # the message quotes a bounded part


def _error_of(program: tuple[str, ...]) -> ValueError:
    with pytest.raises(ValueError) as raised:
        parse_program(program)
    return raised.value


# ---- the Triton source generated from a program (triton is needed to import the module, not a GPU) ---------------
HEADER = re.compile(rf"#   ({INSTRUCTION.pattern}|out = {NAME})", re.ASCII)
FIXED_IMPORTS = {"import triton", "import triton.language as tl",
                 "from tensorkiln.kernels.cuda.triton.epilogue import apply_activation"}


def assert_source_is_closed(program: tuple[str, ...], linear: tuple[bool, ...], rank: int) -> None:
    pointwise = pytest.importorskip("tensorkiln.kernels.cuda.triton.pointwise")
    try:
        source = pointwise.generate_source(program, linear, rank)
    except ValueError:
        return
    tree = ast.parse(source)
    imports = {ast.unparse(node) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))}
    assert imports == FIXED_IMPORTS
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not names & {"__import__", "eval", "exec", "open", "os", "sys", "compile", "getattr", "globals"}
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert strings <= {"inf", "-inf", "nan"}  # float("inf") and the like: the only strings a kernel holds
    comments = [line for line in source.splitlines() if line.startswith("#   ")]
    assert all(HEADER.fullmatch(line) for line in comments), comments
    assert [node.name for node in tree.body if isinstance(node, ast.FunctionDef)][-1] == "fused_pointwise_kernel"


@FUZZ
@given(st.lists(LINE, min_size=0, max_size=4), st.sampled_from(["out = t0", "out = t1", "out = in0"]),
       st.lists(st.booleans(), min_size=1, max_size=3), st.integers(1, 4))
def test_generated_source_holds_only_the_vocabulary(lines, last, linear, rank):
    assert_source_is_closed(tuple(lines) + (last,), tuple(linear), rank)


@FUZZ
@given(near_valid_programs(), st.integers(1, 4))
def test_generated_source_of_near_valid_programs(program, rank):
    assert_source_is_closed(program, (True, False), rank)


def test_generated_source_of_a_valid_program_compiles_to_the_kernel():
    """The check above is not vacuous: a real program does produce source, which the closed-vocabulary test accepts."""
    pointwise = pytest.importorskip("tensorkiln.kernels.cuda.triton.pointwise")
    program = ("t0 = prod in0 in1", "t1 = sum t0 in0", "t2 = leaky_relu t1 0.1 0.0", "t3 = exp t2", "out = t3")
    source = pointwise.generate_source(program, (True, False), 2)
    assert "#   t2 = leaky_relu t1 0.1 0.0" in source and "def fused_pointwise_kernel(" in source
    assert_source_is_closed(program, (True, False), 2)
