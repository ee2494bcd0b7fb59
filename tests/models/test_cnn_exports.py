"""Convolutional networks from torch.nn (tests/models/torch_cnns.py), exported with the TorchScript exporter (opset
17, BatchNorm kept as its own node), built with the default pipeline and compared with onnxruntime. Every
convolution's BatchNorm, activation and residual add must end inside a fused convolution; the layer counts before
and after optimization are asserted and printed. ResNet-50 at batch 32 (224x224) is built but never run: its memory
plan must need at most 25% of the sum of its activations, and `kiln inspect` must say so."""
from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import pytest
import torch

import tensorkiln as tk
import torch_cnns
from tensorkiln.importers.onnx import parse_onnx

RTOL = 1e-4  # FP32 over a whole network: max |ours - onnxruntime| over max |onnxruntime|
# what may remain of a CNN after fusion: no convolution, BatchNorm (scale), activation or elementwise layer
FUSED_CNN_KINDS = {"fused_convolution", "fused_matmul", "pooling", "global_pooling", "shuffle", "split",
                   "concatenation"}


def _export(module, shape, path, dynamic=False) -> str:
    torch.manual_seed(0)
    module = torch_cnns.randomize(module)
    axes = {"x": {0: "batch", 2: "height", 3: "width"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes=axes, training=torch.onnx.TrainingMode.PRESERVE)
    return str(path)


def _node_names(path, *op_types) -> set[str]:
    return {n.name for n in onnx.load(path).graph.node if n.op_type in op_types}


def _build_and_compare(path, shape):
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    engine = tk.Builder().build(parse_onnx(path, input_shapes={"x": shape}))
    (expected,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    (actual,) = engine.create_execution_context().execute({"x": x}).values()
    error = np.max(np.abs(actual.astype(np.float64) - expected)) / np.max(np.abs(expected))
    assert error <= RTOL, f"relative error {error:.2e} against onnxruntime"
    return engine


def _fused_summary(engine):
    """(kinds of the steps, every original layer name inside a fused convolution)."""
    steps = engine.plan.steps
    inside = {name for s in steps if s.kind == "fused_convolution" for name in s.fused_from}
    return [s.kind for s in steps], inside


def _report(name, engine):
    before, after = engine.plan.build_info["layers_before"], len(engine.plan.steps)
    print(f"{name}: {before} layers before optimization, {after} after")
    return before, after


@pytest.fixture(scope="module")
def resnet50_onnx(tmp_path_factory):
    return _export(torch_cnns.ResNet50(), (1, 3, 64, 64), tmp_path_factory.mktemp("resnet") / "r50.onnx", True)


def test_resnet50_every_convolution_fuses_its_batchnorm_relu_and_residual_add(resnet50_onnx):
    engine = _build_and_compare(resnet50_onnx, (1, 3, 64, 64))
    before, after = _report("ResNet-50", engine)
    kinds, inside = _fused_summary(engine)
    assert set(kinds) <= FUSED_CNN_KINDS, set(kinds) - FUSED_CNN_KINDS
    convs = _node_names(resnet50_onnx, "Conv")
    assert len(convs) == 53
    # every Conv, BatchNormalization, Relu and residual Add of the model is now part of a fused convolution
    assert convs | _node_names(resnet50_onnx, "BatchNormalization", "Relu", "Add") <= inside
    counts = engine.plan.build_info["pass_counts"]
    assert counts["fold_scale.scale_into_convolution"] == 53
    assert counts["fuse_vertical.residual"] == 16 and counts["fuse_vertical.post_activation"] == 16
    # the first bottleneck's 1x1 convolution (-> ReLU) and its downsample (-> Add) read the same tensor but stay
    # apart: merged, they would share no epilogue
    assert "fuse_horizontal.convolution_groups" not in counts
    assert kinds.count("fused_convolution") == 53
    assert kinds.count("fused_matmul") == 1  # the classifier: Gemm with its bias
    assert (before, after) == (549, 57)  # 53 convolutions, max pool, global pool, flatten, classifier


def test_resnet50_batch32_memory_plan_needs_at_most_a_quarter_of_its_activations(resnet50_onnx, tmp_path, capsys):
    from tensorkiln.cli.main import main

    engine = tk.Builder().build(parse_onnx(resnet50_onnx, input_shapes={"x": (32, 3, 224, 224)}))  # not run
    memory = engine.plan.memory
    share = memory.arena_bytes / memory.activation_bytes
    with capsys.disabled():
        print(f"ResNet-50 batch 32: arena {memory.arena_bytes / 2**20:.1f} MiB for "
              f"{memory.activation_bytes / 2**20:.1f} MiB of activations ({100 * share:.1f}%)")
    assert share <= 0.25
    assert memory.activation_bytes > 1000 * 2**20  # the sum of every activation at batch 32 is over 1 GiB
    path = tmp_path / "r50_b32.engine"
    engine.save(path)
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    line = re.search(r"activation memory: arena ([\d.]+) MiB for ([\d.]+) MiB of activations \((\d+)%\)",
                     capsys.readouterr().out)
    assert line is not None
    assert float(line[1]) == pytest.approx(memory.arena_bytes / 2**20, abs=0.01) and int(line[3]) <= 25


def test_mobilenet_v2_fuses_relu6_and_residual_adds(tmp_path):
    path = _export(torch_cnns.MobileNetV2(), (1, 3, 64, 64), tmp_path / "mobilenet_v2.onnx")
    engine = _build_and_compare(path, (1, 3, 64, 64))
    before, after = _report("MobileNetV2", engine)
    kinds, inside = _fused_summary(engine)
    assert set(kinds) <= FUSED_CNN_KINDS, set(kinds) - FUSED_CNN_KINDS
    convs = _node_names(path, "Conv")
    assert len(convs) == 52 and kinds.count("fused_convolution") == 52
    assert convs | _node_names(path, "BatchNormalization", "Clip", "Add") <= inside
    clipped = [s for s in engine.plan.steps if s.kind == "fused_convolution" and s.op.activation is not None]
    assert len(clipped) == 35 and all((s.op.alpha, s.op.beta) == (0.0, 6.0) for s in clipped)  # ReLU6
    assert sum(s.op.residual for s in engine.plan.steps if s.kind == "fused_convolution") == 10
    assert (before, after) == (589, 55)


def test_inception_block_merges_and_fuses_its_branches(tmp_path):
    path = _export(torch_cnns.InceptionA(), (1, 192, 13, 11), tmp_path / "inception_a.onnx")
    engine = _build_and_compare(path, (1, 192, 13, 11))
    before, after = _report("Inception-v3 block A", engine)
    kinds, inside = _fused_summary(engine)
    assert set(kinds) <= FUSED_CNN_KINDS, set(kinds) - FUSED_CNN_KINDS
    assert _node_names(path, "Conv", "BatchNormalization", "Relu") <= inside
    # the three 1x1 convolutions that read x are one; the pool branch's reads the pooled tensor
    assert kinds.count("fused_convolution") == 5 and kinds.count("split") == 1
    assert all(s.op.activation is tk.ActivationType.RELU for s in engine.plan.steps if s.kind == "fused_convolution")
    assert (before, after) == (72, 8)


def test_kiln_build_verbose_prints_the_fusions_and_the_arena(tmp_path, capsys, monkeypatch):
    from tensorkiln.cli.main import main

    monkeypatch.setenv("COLUMNS", "1000")  # one log line per line

    path = _export(torch_cnns.InceptionA(48, 8), (1, 48, 9, 7), tmp_path / "block.onnx")
    assert main(["build", path, "-o", str(tmp_path / "block.engine"), "--verbose"]) == 0
    out = capsys.readouterr().out
    # "conv + bn + relu -> conv.fused", with the exporter's node names
    block = "/branch5x5/branch5x5.1/branch5x5.1."
    assert f"{block}0/Conv + {block}1/BatchNormalization + {block}2/Relu -> {block}0/Conv.fused" in out, out
    assert "pass fuse_vertical: fused_convolution=5" in out
    assert re.search(r"activation memory: arena [\d.]+ MiB for [\d.]+ MiB of activations \(\d+%\)", out)
