"""The CPU static executor (runtime/static_executor.py): the program it compiles computes what the step-by-step path
computes, on real models, and both agree with onnxruntime; steps are bound where a binder serves them."""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest
import torch

import tensorkiln as tk
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.runtime.static_executor import StaticExecutor

# (folder/file, input shapes, build-time input values, feed-only values); random standard-normal inputs
MODELS = {
    "silero": ("silero_vad/silero_vad_16k_op15.onnx", {"input": (1, 512), "state": (2, 1, 128)}, {"sr": 16000}),
    "ppocr_cls": ("ppocrv4_det_cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)}, {}),
    "ultraface_slim": ("ultraface/version-slim-320.onnx", {"input": (1, 3, 240, 320)}, {}),
}


@functools.cache
def _built(shared: str, name: str):
    path, shapes, values = MODELS[name]
    network = parse_onnx(f"{shared}/models/onnx/{path}", input_shapes=shapes,
                         input_values={k: np.array(v, dtype=np.int64) for k, v in values.items()} or None)
    return tk.Runtime().deserialize(tk.Builder().build(network).serialize())


def _feed(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {k: rng.standard_normal(v, dtype=np.float32) for k, v in MODELS[name][1].items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_program_matches_step_by_step_and_onnxruntime(shared_dir, name):
    engine = _built(str(shared_dir), name)
    context = engine.create_execution_context()
    assert isinstance(context._static, StaticExecutor)
    feed = _feed(name)
    fast = context.execute(feed)
    # the step-by-step path: run_each_step with a hook that only launches
    slow = context.run_each_step(feed, lambda index, launch, args: launch())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    path, _, values = MODELS[name]
    session = ort.InferenceSession(f"{shared_dir}/models/onnx/{path}", options, providers=["CPUExecutionProvider"])
    reference = session.run(None, {**feed, **{k: np.array(v, dtype=np.int64) for k, v in values.items()}})
    for (output, value), expected in zip(fast.items(), reference):
        # the bound LSTM cell sums its gates in another order than the kernel: float32 rounding apart
        np.testing.assert_allclose(value, slow[output].numpy(), rtol=1e-5, atol=1e-6, err_msg=output)
        scale = float(np.max(np.abs(expected))) or 1.0
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=output)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hot_steps_are_bound(shared_dir, name):
    """Every fused convolution, fused pointwise program and LSTM of these models runs a bound call."""
    engine = _built(str(shared_dir), name)
    program = engine.create_execution_context()._static._program
    bound_kinds = {"fused_convolution", "fused_pointwise", "recurrent"}
    steps = [(step.kind, call) for step, (call, *_) in zip(engine.plan.steps, program) if step.kind in bound_kinds]
    assert steps
    unbound = [kind for kind, call in steps if isinstance(call, functools.partial)]
    assert not unbound, unbound


def test_repeated_runs_are_independent(shared_dir):
    """Slots are per run: a second run with other inputs gives its own result, and the first result is not
    overwritten by it (outputs are fresh tensors, never a slot the next run writes)."""
    engine = _built(str(shared_dir), "ppocr_cls")
    context = engine.create_execution_context()
    first_feed, second_feed = _feed("ppocr_cls"), {"x": np.random.default_rng(1).standard_normal((1, 3, 48, 192),
                                                                                                dtype=np.float32)}
    first = context.execute(first_feed)
    kept = {k: v.copy() for k, v in first.items()}
    second = context.execute(second_feed)
    again = context.execute(first_feed)
    for name in first:
        np.testing.assert_array_equal(first[name], kept[name])
        np.testing.assert_array_equal(again[name], kept[name])
        assert not np.array_equal(second[name], kept[name])


def test_torch_inputs_and_outputs(shared_dir):
    engine = _built(str(shared_dir), "silero")
    context = engine.create_execution_context()
    feed = _feed("silero")
    from_numpy = context.execute(feed)
    from_torch = context.execute({k: torch.from_numpy(v) for k, v in feed.items()})
    for name, value in from_numpy.items():
        assert isinstance(from_torch[name], torch.Tensor)
        np.testing.assert_array_equal(from_torch[name].numpy(), value)


def test_small_layers_run_on_one_thread_and_the_count_is_restored(shared_dir):
    """PP-OCR cls's convolutions are all under SERIAL_BELOW_MACS: they run on the calling thread alone, and the
    context's thread count is back after the run, also when a step fails."""
    engine = _built(str(shared_dir), "ppocr_cls")
    saved = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(2)
        context = engine.create_execution_context()
        assert context._static.serial_steps == sum(step.kind in ("fused_convolution", "fused_matmul")
                                                   for step in engine.plan.steps)
        program = list(context._static._program)
        call, *rest = program[1]
        program[1] = (lambda args, call=call: seen.append(torch.get_num_threads()) or call(args), *rest)
        context._static._program = tuple(program)
        context.execute(_feed("ppocr_cls"))
        assert torch.get_num_threads() == 2
        assert seen == [1]  # the step ran on one thread
        _, *rest = program[2]
        program[2] = (lambda args: (_ for _ in ()).throw(RuntimeError("kernel failed")), *rest)
        context._static._program = tuple(program)
        with pytest.raises(RuntimeError, match="kernel failed"):
            context.execute(_feed("ppocr_cls"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_a_program_per_thread_count(shared_dir):
    """oneDNN packs weights for the thread count in force: a run on another count binds a program of its own (its
    weights packed for that count), with the same results."""
    engine = _built(str(shared_dir), "ultraface_slim")
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        context = engine.create_execution_context()
        two = context.execute(_feed("ultraface_slim"))
        torch.set_num_threads(1)
        one = context.execute(_feed("ultraface_slim"))
        assert sorted(context._static._programs) == [1, 2]
        for name in two:
            np.testing.assert_allclose(one[name], two[name], rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(saved)
