"""forward_residual_bias: the biases of a residual stream of linear blocks (MobileNetV2's projections) are carried
forward in the stream and taken in by the convolutions that read it. The outputs agree with the same network built
without the pass. Counts and the engine's biases are asserted. The pass does not fire where a stream is a network
output, where a padded convolution reads it, where no block has a residual, or where an activation follows the
residual add (ResNet)."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.ir.ops import ActivationType as A
from tensorkiln.passes.manager import DEFAULT_PIPELINE, pipeline_with
from tolerances import tolerance_for

WITH = DEFAULT_PIPELINE
WITHOUT = pipeline_with("-forward_residual_bias")
TOL = tolerance_for("float32")


class _Net:
    """A network written layer by layer with seeded weights and biases of a few units (BatchNorm-folded sizes)."""

    def __init__(self):
        self.net = tk.NetworkDefinition()
        self.rng = np.random.default_rng(1)

    def conv(self, t, channels, kernel=1, padding=0, groups=1, act=None, bias=True, name=None, stride=1):
        fan_in = t.shape[1] // groups * kernel * kernel
        weight = (self.rng.standard_normal((channels, t.shape[1] // groups, kernel, kernel)) / np.sqrt(fan_in))
        layer = self.net.add_convolution(t, channels, (kernel, kernel), weight.astype(np.float32),
                                         bias=(self.rng.standard_normal(channels) * 2).astype(np.float32) if bias
                                         else None, stride=stride, padding=padding, groups=groups, name=name)
        out = layer.get_output(0)
        if act is A.CLIP:
            return self.net.add_activation(out, A.CLIP, alpha=0.0, beta=6.0).get_output(0)
        return self.net.add_activation(out, act).get_output(0) if act else out

    def block(self, s, residual=True, post=None, name="block"):
        """Inverted residual: 1x1 expansion + ReLU6, 3x3 depthwise + ReLU6, linear 1x1 projection (+ s)."""
        wide = self.conv(s, 2 * s.shape[1], act=A.CLIP)
        wide = self.conv(wide, wide.shape[1], kernel=3, padding=1, groups=wide.shape[1], act=A.CLIP)
        out = self.conv(wide, s.shape[1], name=f"{name}_projection")
        if residual:
            out = self.net.add_elementwise(out, s, tk.ElementWiseOperation.SUM).get_output(0)
            if post:
                out = self.net.add_activation(out, post).get_output(0)
        return out


def _mobilenet_stage(blocks=2, tail_padding=0, stream_output=False, post=None):
    def make():
        n = _Net()
        x = n.net.add_input("x", tk.DataType.FLOAT, (2, 8, 9, 7))
        s = n.block(n.conv(x, 16, kernel=3, padding=1, act=A.CLIP), residual=False, name="head")
        for index in range(blocks):
            s = n.block(s, post=post, name=f"block{index}")
        if stream_output:
            n.net.mark_output(s)
        tail = n.conv(s, 24, kernel=1 + 2 * tail_padding, padding=tail_padding, act=A.CLIP, name="tail")
        n.net.mark_output(n.net.add_global_pooling(tail, tk.PoolingType.AVERAGE).get_output(0))
        return n.net
    return make


def _build(make) -> tuple[tk.Engine, dict[str, int]]:
    """The engine with the pass, after checking that its outputs agree with the engine built without it."""
    engine = tk.Builder(tk.BuilderConfig(passes=WITH, debug=True)).build(make())
    reference = tk.Builder(tk.BuilderConfig(passes=WITHOUT)).build(make())
    feed = {"x": np.random.default_rng(0).standard_normal((2, 8, 9, 7)).astype(np.float32)}
    got, want = engine.create_execution_context().execute(feed), reference.create_execution_context().execute(feed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=TOL.rtol, atol=TOL.atol, err_msg=name)
    prefix = "forward_residual_bias."
    counts = {k[len(prefix):]: v for k, v in engine.plan.build_info["pass_counts"].items() if k.startswith(prefix)}
    return engine, counts


def test_the_pass_runs_by_default_after_vertical_fusion_and_can_be_left_out():
    assert DEFAULT_PIPELINE.index("forward_residual_bias") == DEFAULT_PIPELINE.index("fuse_vertical") + 1
    assert "forward_residual_bias" not in WITHOUT
    assert pipeline_with("+forward_residual_bias") == DEFAULT_PIPELINE
    assert "fuse_horizontal" not in pipeline_with("-fuse_horizontal,+forward_residual_bias")
    with pytest.raises(ValueError, match="unknown pass 'fold_bias'"):
        pipeline_with("+fold_bias")


def test_the_stream_of_a_stage_carries_its_biases():
    engine, counts = _build(_mobilenet_stage(blocks=2))
    # the head and both residual projections lose their bias; both expansions and the tail take the constants in
    assert counts == {"forwarded": 3, "absorbed": 3}
    projections = [s for s in engine.plan.steps if "projection" in s.name]
    assert len(projections) == 3 and all(s.inputs[2] is None for s in projections)
    assert sum(bool(s.op.residual) for s in projections) == 2


@pytest.mark.parametrize("case, make, forwarded", [
    ("the stream is a network output", _mobilenet_stage(stream_output=True), 2),
    ("a padded convolution reads the stream", _mobilenet_stage(tail_padding=1), 2),
    ("a ReLU follows each residual add", _mobilenet_stage(post=A.RELU), 1),
])
def test_a_stream_ends_in_the_last_block_before_a_reader_the_constant_cannot_reach(case, make, forwarded):
    # that block keeps its bias and takes in what the stream carried (its residual add comes right after its bias)
    engine, counts = _build(make)
    assert counts == {"forwarded": forwarded, "absorbed": forwarded + 1}, case
    projections = [s for s in engine.plan.steps if "projection" in s.name]
    assert [s.inputs[2] is None for s in projections] == [True] * forwarded + [False] * (3 - forwarded), case


def test_a_network_without_residual_adds_keeps_its_biases():
    engine, counts = _build(_mobilenet_stage(blocks=0))
    assert not counts
    assert all(s.inputs[2] is not None for s in engine.plan.steps if s.kind == "fused_convolution")


def _resnet_downsample_block():
    def make():
        n = _Net()
        x = n.net.add_input("x", tk.DataType.FLOAT, (2, 8, 9, 7))
        x = n.conv(x, 8, kernel=3, padding=1, act=A.RELU, name="stem")
        h = n.conv(n.conv(x, 4, act=A.RELU), 4, kernel=3, padding=1, stride=2, act=A.RELU)
        h = n.conv(h, 16, name="conv3")
        shortcut = n.conv(x, 16, stride=2, name="downsample")  # after conv3, as torchvision's Bottleneck runs it
        h = n.net.add_elementwise(h, shortcut, tk.ElementWiseOperation.SUM).get_output(0)
        n.net.mark_output(n.net.add_global_pooling(n.net.add_activation(h, A.RELU).get_output(0),
                                                   tk.PoolingType.AVERAGE).get_output(0))
        return n.net
    return make


def test_a_resnet_downsample_hands_its_bias_to_the_convolution_it_is_added_to():
    # conv3 + bias + shortcut, then ReLU: the shortcut's bias can join conv3's, which leaves the strided 1x1
    # downsample a plain GEMM
    engine, counts = _build(_resnet_downsample_block())
    assert counts == {"forwarded": 1, "absorbed": 1}
    downsample = next(s for s in engine.plan.steps if s.name.startswith("downsample"))
    conv3 = next(s for s in engine.plan.steps if s.name.startswith("conv3"))
    assert downsample.inputs[2] is None and conv3.inputs[2] is not None and conv3.op.residual


def test_centerface_with_the_pass_matches_its_reference(shared_dir):
    # CenterFace has a MobileNetV2 backbone: 15 projections lose their bias; onnxruntime's outputs still hold
    from tensorkiln.importers.onnx import parse_onnx

    folder = shared_dir / "models" / "onnx" / "centerface"
    data = np.load(folder / "reference.npz", allow_pickle=False)
    inputs = {k[len("input:"):]: data[k] for k in data.files if k.startswith("input:")}
    network = parse_onnx(folder / "centerface.onnx", input_shapes={name: value.shape for name, value in inputs.items()})
    engine = tk.Builder(tk.BuilderConfig(passes=WITH)).build(network)
    assert engine.plan.build_info["pass_counts"]["forward_residual_bias.forwarded"] == 15
    outputs = engine.create_execution_context().execute(inputs)
    for key in (k for k in data.files if k.startswith("output:")):
        reference = data[key]
        error = np.max(np.abs(outputs[key[len("output:"):]].astype(np.float64) - reference)) / np.max(np.abs(reference))
        assert error <= 1e-4, f"{key}: relative error {error:.2e}"
