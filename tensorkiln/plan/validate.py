"""Plan validation: the single gate between a plan read from an engine file and anything that runs it.

Anyone can edit an engine's plan and re-seal it (its checksum detects accidents, not attackers), so `read_plan` takes
nothing on trust. After schema.py has checked every field's type and range, this module checks what the fields mean
together, in the order that keeps hostile values away from kernels:
  - names: unique tensors (inputs, weights, produced tensors), unique steps and outputs;
  - sizes: each tensor and all of them together under the limits;
  - plugins: registered in this process, with parameters their class accepts;
  - each step, in order: its tactic (`<target>.<kind>.<impl>` of the plan's own target and the step's kind, a
    registered kernel, and one whose predicate accepts the step where the target device is present), its inputs
    (produced before use), its outputs (declared, produced once), its attributes (op_checks.py), then its shapes and
    dtypes, re-derived by shape inference on the meta device and compared with the declared ones;
  - the outputs: each produced, with the shape and dtype it is produced with;
  - residual_in_place only where plan/in_place.py allows it, and the memory plan as plan/memory.py recomputes it.
A violation raises one EngineFormatError line that names the field and says to rebuild the engine.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterable

import torch

from ..errors import EngineFormatError
from ..ir.dtypes import DataType
from ..ir.infer import InferredOutput, infer_on_meta
from ..ir.shape_rules import broadcast_shapes, closed_form
from ..kernels.registry import KernelEntry, find_kernel, get_kernel
from ..tactics.selection import parse_tactic
from . import in_place
from .memory import plan_memory
from .op_checks import check_op, required
from .plan import Plan, Step, TensorSpec
from .schema import PlanProblem, plan_from_json

REBUILD = "rebuild the engine from the model with `kiln build`"
MAX_TOTAL_BYTES = 2**40  # all the tensors of one engine together
MAX_MESSAGE = 1000  # characters of a problem's description


def read_plan(data: Any, source: str) -> Plan:
    """The Plan of an engine's parsed plan JSON, validated; EngineFormatError naming the field where it is not."""
    try:
        plan = plan_from_json(data)
        validate_plan(plan)
    except PlanProblem as problem:
        raise EngineFormatError(f"{source}: {_shortened(str(problem))}; {REBUILD}") from None
    return plan


def _shortened(text: str) -> str:
    """One line of at most MAX_MESSAGE characters: a message quotes the file's values, which can be megabytes."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def validate_plan(plan: Plan, on_this_machine: bool = True) -> None:
    """Raise PlanProblem where the plan is not one this runtime can run as declared (see the module docstring).
    `on_this_machine=False` leaves out the check that a CPU engine fits this machine's memory (the builder's: an
    engine may be built for a larger machine, with a raised memory budget)."""
    _check_names(plan)
    _check_sizes(plan)
    _check_plugins(plan)
    produced = _check_steps(plan)
    _check_outputs(plan, produced)
    _check_in_place(plan)
    _check_memory(plan)
    if on_this_machine:
        _check_fits_machine(plan)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PlanProblem(f"{what} {name!r} is declared twice")
        seen.add(name)


def _check_names(plan: Plan) -> None:
    _unique((t.name for t in (*plan.inputs, *plan.weights, *plan.tensors)), "tensor")
    _unique((t.name for t in plan.outputs), "output")
    _unique((s.name for s in plan.steps), "step")
    if not plan.outputs:  # (no steps is fine: a network folded to constants returns its weights)
        raise PlanProblem("the plan has no outputs")


def _check_sizes(plan: Plan) -> None:
    total = sum(t.nbytes for t in (*plan.inputs, *plan.weights, *plan.tensors))
    if total > MAX_TOTAL_BYTES:
        raise PlanProblem(f"the engine's tensors take {total} bytes together, more than the {MAX_TOTAL_BYTES} an "
                          "engine may")


def _check_plugins(plan: Plan) -> None:
    from ..plugins import check_plugins

    plugin_steps = [step for step in plan.steps if step.kind == "plugin"]
    for step in plugin_steps:  # the parameters' JSON first: check_plugins hands it to the plugin's class
        try:
            check_op(step.op, ())
        except PlanProblem as problem:
            raise PlanProblem(f"step {step.name!r} (plugin): {problem}") from None
    try:
        check_plugins(plugin_steps)
    except EngineFormatError as error:  # MissingPluginError: says which plugins to import (quoting the file's text)
        raise type(error)(_shortened(str(error))) from None
    except Exception as error:  # a registered plugin's own code refusing the parameters in its own way
        raise PlanProblem(f"a plugin rejects its parameters ({_one_line(error)})") from None


# ---- steps ------------------------------------------------------------------------------------------------------
def _check_steps(plan: Plan) -> dict[str, tuple[TensorSpec, Step | None]]:
    """Every step in order; returns each tensor's spec as it is at run time, with the step that produces it."""
    env: dict[str, tuple[TensorSpec, Step | None]] = {t.name: (t, None) for t in (*plan.inputs, *plan.weights)}
    declared = {t.name: t for t in plan.tensors}
    for step in plan.steps:
        try:
            specs = _check_step(plan, step, env, declared)
        except PlanProblem as problem:
            raise PlanProblem(f"step {step.name!r} ({step.kind}): {problem}") from None
        env.update((spec.name, (spec, step)) for spec in specs)
    unproduced = sorted(set(declared) - set(env))
    if unproduced:
        raise PlanProblem(f"tensors {unproduced[:5]} are declared, but no step produces them")
    return env


def _check_step(plan: Plan, step: Step, env: dict, declared: dict[str, TensorSpec]) -> list[TensorSpec]:
    entry = check_tactic(step, plan.target)
    for name in step.inputs:
        if name is not None and name not in env:
            raise PlanProblem(f"reads {name!r} before any step produces it (and it is no engine input or weight)")
    for name in step.outputs:
        if name in env:
            raise PlanProblem(f"writes {name!r}, which is already an engine input, a weight or an earlier step's "
                              "output")
        if name not in declared:
            raise PlanProblem(f"writes {name!r}, which the plan's tensors do not declare")
    compute = step.compute_dtype(plan.precision)
    inputs = [None if name is None else _computed_in(env[name][0], compute) for name in step.inputs]
    check_op(step.op, inputs)
    _check_predicate(entry, step, inputs, plan.target)
    return _inferred_outputs(step, inputs, declared, compute, plan.target)


def _computed_in(spec: TensorSpec, compute) -> TensorSpec:
    """The spec as the step sees it: floating inputs are cast to the step's compute dtype."""
    if compute is None or not spec.dtype.is_floating or spec.dtype is compute:
        return spec
    return TensorSpec(spec.name, compute, spec.shape, spec.dim_names)


def check_tactic(step: Step, target: str) -> KernelEntry:
    """The registered kernel a step's tactic names: of the plan's own target and of the step's layer kind."""
    try:
        tactic_target, kind, impl = parse_tactic(step.tactic)
    except ValueError as error:
        raise PlanProblem(str(error)) from None
    if tactic_target != target:
        raise PlanProblem(f"tactic {step.tactic!r} is a {tactic_target} tactic in an engine built for {target}")
    if kind != step.kind:
        raise PlanProblem(f"tactic {step.tactic!r} is for {kind} layers, not {step.kind}")
    entry = find_kernel(kind, target, impl)
    if entry is None:
        from ..kernels.cuda.triton_tactics import TRITON_AVAILABLE

        if target == "cuda" and impl.startswith("triton_") and not TRITON_AVAILABLE:
            raise PlanProblem(f"tactic {step.tactic!r} is a Triton kernel, and triton is not installed here (install "
                              "it with `pip install triton` to run this engine)")
        raise PlanProblem(f"tactic {step.tactic!r} names no registered {target} kernel")
    return entry


def _check_predicate(entry: KernelEntry, step: Step, inputs: list, target: str) -> None:
    """The kernel must accept the step, as it did at build time: kernels rely on what their predicate checks. Where
    the target device is absent the engine cannot run (runtime/engine.py says so), and device-dependent predicates
    (e.g. Hopper's TMA) cannot answer, so they are asked only where it is present."""
    if entry.supports is None or (target == "cuda" and not torch.cuda.is_available()):
        return
    try:
        accepted = entry.accepts(step.op, inputs)
    except Exception:  # a predicate meeting shapes it never met at build time
        accepted = False
    if not accepted:
        raise PlanProblem(f"tactic {step.tactic!r} cannot serve this layer's shapes and attributes")


# Layer kinds that compute element by element over the broadcast of the inputs they read. Their outputs' shapes are
# found by broadcasting, and their dtypes by the CPU kernel on one element per input (microseconds): on the meta
# device, torch runs these ops through its Python reference implementations, a millisecond or more per op, which
# made loading a 115-step model take 250 ms; Resize's interpolation there took most of the rest.
# tests/plan/test_plan_inference.py checks that these ways agree with the meta device, except where the CPU kernel
# refuses dtypes the meta device takes: a CPU engine with such a step is refused (it would fail when run).
ELEMENTWISE_KINDS = frozenset({"activation", "unary", "elementwise", "fused_pointwise", "cast"})


def infer_outputs(op, inputs: list, target: str = "cpu") -> list:
    """Output dtypes and shapes of a step (ir.infer.InferredOutput) in an engine for `target`: the fast way for
    ELEMENTWISE_KINDS, else on the meta device, without the epilogue's activations (see _without_activations);
    results are cached, as an engine repeats its blocks and a server loads its engines again."""
    unnamed = tuple(None if spec is None else TensorSpec("", spec.dtype, spec.shape) for spec in inputs)
    try:
        hash((op, unnamed))
    except TypeError:  # an attribute of a kind that is not hashable (none today): no caching
        return _infer_outputs(op, inputs, target)
    return list(_cached_inference(op, unnamed, target))


@functools.lru_cache(maxsize=4096)
def _cached_inference(op, inputs: tuple, target: str) -> tuple:
    return tuple(_infer_outputs(op, list(inputs), target))


def _infer_outputs(op, inputs: list, target: str) -> list:
    if any(s is not None and s.is_dynamic for s in inputs):
        return infer_on_meta(op, inputs)
    if op.KIND == "resize":  # its attributes name its output shape (op_checks.check_resize checked them)
        return [InferredOutput(required(inputs, 0, "data").dtype, tuple(op.output_shape), None)]
    if op.KIND not in ELEMENTWISE_KINDS or any(s is None for s in inputs):
        known = closed_form(op, inputs)  # the formula where it is sure (ir/shape_rules.py): the meta device is slow
        if known is not None:
            return [InferredOutput(dtype, shape, None) for dtype, shape in known]
        return infer_on_meta(_without_activations(op, inputs), inputs)
    shape = _elementwise_shape(op, inputs)
    ones = [torch.ones((1,) * len(spec.shape), dtype=spec.dtype.torch) for spec in inputs]
    try:
        with torch.inference_mode():
            (output,) = get_kernel(op.KIND, "cpu")(op, ones)
    except Exception:  # a dtype the CPU kernel lacks (a bit shift of floats), which the meta device accepts
        if target == "cpu":
            raise  # the engine's own kernel: it would raise the same at run time
        return infer_on_meta(op, inputs)  # a CUDA kernel may take it: the meta device judges
    return [InferredOutput(DataType.from_torch(output.dtype), shape, None)]


def _without_activations(op, inputs: list):
    """A fused layer with its activations dropped, where they cannot change its outputs' shape or dtype (a floating
    input; activations work element by element and keep a floating dtype): on the meta device, torch runs them
    through its Python reference implementations, which took most of a load's time."""
    if not hasattr(op, "post_activation"):  # not a fused layer (another kind's `activation` may be a plain string)
        return op
    if op.post_activation is None and op.activation is None:
        return op
    if not inputs or inputs[0] is None or not inputs[0].dtype.is_floating:
        return op
    return dataclasses.replace(op, activation=None, post_activation=None)


def _elementwise_shape(op, inputs: list) -> tuple[int, ...]:
    """The output shape of an elementwise step: its inputs broadcast together, or for a fused program each
    instruction's operands broadcast in turn (as its kernel computes every one, read or not) and the result's
    shape. RuntimeError where operands do not broadcast."""
    if op.KIND != "fused_pointwise":
        return tuple(broadcast_shapes(*(spec.shape for spec in inputs)))
    from ..kernels.cpu.fused import parse_program

    instructions, result = parse_program(op.program)
    shapes = {f"in{index}": tuple(spec.shape) for index, spec in enumerate(inputs)}
    for step in instructions:
        shapes[step.target] = tuple(broadcast_shapes(*(shapes[name] for name in step.operands)))
    return shapes[result]


def _inferred_outputs(step: Step, inputs: list, declared: dict[str, TensorSpec], compute,
                      target: str) -> list[TensorSpec]:
    """The step's outputs as shape inference finds them, each checked against its declaration."""
    try:
        inferred = infer_outputs(step.op, inputs, target)
    except Exception as error:  # whatever a kernel raises on shapes or attributes that do not fit
        raise PlanProblem(f"its inputs ({_describe_inputs(inputs)}) do not fit it ({_one_line(error)})") from None
    if len(inferred) != len(step.outputs):
        raise PlanProblem(f"writes {len(step.outputs)} tensors, but its kernel makes {len(inferred)}")
    specs = []
    for name, output in zip(step.outputs, inferred):
        spec = declared[name]
        if spec.shape != output.shape:
            raise PlanProblem(f"tensor {name!r} is declared with shape {list(spec.shape)}, but the step makes "
                              f"{list(output.shape)}")
        # reduced-precision steps: the builder declares floating outputs in the step's dtype, the kernel may differ
        loose = compute is not None and spec.dtype.is_floating and output.dtype.is_floating
        if spec.dtype is not output.dtype and not loose:
            raise PlanProblem(f"tensor {name!r} is declared {spec.dtype.value}, but the step makes "
                              f"{output.dtype.value}")
        specs.append(TensorSpec(name, output.dtype, output.shape, spec.dim_names))
    return specs


def _describe_inputs(inputs: list) -> str:
    return ", ".join("None" if s is None else f"{s.dtype.value}{list(s.shape)}" for s in inputs)[:300]


# ---- outputs, in-place residuals and the memory plan -----------------------------------------------------------
def _check_outputs(plan: Plan, produced: dict[str, tuple[TensorSpec, Step | None]]) -> None:
    for output in plan.outputs:
        if output.name not in produced:
            raise PlanProblem(f"output {output.name!r} is produced by no step (and is no engine input or weight)")
        source, step = produced[output.name]
        if output.shape != source.shape:
            raise PlanProblem(f"output {output.name!r} is declared with shape {list(output.shape)}, but it is "
                              f"produced with {list(source.shape)}")
        # a reduced-precision step's floating output is converted to the declared floating dtype at the end
        reduced = step is not None and step.compute_dtype(plan.precision) is not None
        loose = reduced and output.dtype.is_floating and source.dtype.is_floating
        if output.dtype is not source.dtype and not loose:
            raise PlanProblem(f"output {output.name!r} is declared {output.dtype.value}, but it is produced as "
                              f"{source.dtype.value}")


def _check_in_place(plan: Plan) -> None:
    flagged = [step for step in plan.steps if getattr(step.op, "residual_in_place", False)]
    if not flagged:
        return
    outside = {t.name for t in plan.outputs}
    allowed = in_place.residual_in_place_candidates(plan.steps, plan.tensors, outside)
    # A kernel that honours the flag stores its output over the residual: only safe where the residual dies at this
    # step and nothing else shares its bytes. (A kernel that does not honour it writes a fresh output: harmless.)
    for step in flagged:
        if step.name not in allowed:
            raise PlanProblem(f"step {step.name!r} ({step.kind}): residual_in_place is set, but its residual is not "
                              "one it may store over (it must die there, be planned memory, of the output's shape)")


def _check_memory(plan: Plan) -> None:
    if plan.memory is None:
        return
    expected = plan_memory(plan.steps, plan.tensors, {t.name for t in plan.outputs})
    if expected != plan.memory:
        raise PlanProblem(f"the memory plan (arena of {plan.memory.arena_bytes} bytes, {len(plan.memory.offsets)} "
                          f"offsets) is not the one its steps make ({expected.arena_bytes} bytes, "
                          f"{len(expected.offsets)} offsets)")



@functools.cache
def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return None


def _check_fits_machine(plan: Plan) -> None:
    """A CPU engine whose tensors cannot fit in this machine's memory is refused here, not by an allocation deep in
    a kernel (a consistent edit of shapes and the memory plan can ask for hundreds of GB; so can a real model at a
    batch size built elsewhere). Its peak is the planned arena plus the tensors held outside it."""
    memory = _physical_memory()
    if plan.target != "cpu" or memory is None:
        return
    outside = {t.name for t in plan.outputs}
    arena = plan.memory.arena_bytes if plan.memory else sum(t.nbytes for t in plan.tensors if t.name not in outside)
    held = sum(t.nbytes for t in (*plan.inputs, *plan.outputs, *plan.weights))
    if arena + held > memory:
        raise PlanProblem(f"the engine needs {(arena + held) / 2**30:.1f} GiB for its tensors, more than this "
                          f"machine's {memory / 2**30:.1f} GiB of memory")
