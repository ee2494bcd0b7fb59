"""Small models the compare and precision tests share: a torch CNN exported to ONNX, and three-convolution ONNX
graphs built so that one chosen layer is the inaccurate one in INT8, or overflows FP16."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper


class SmallCnn(nn.Module):
    """conv-bn-relu, a residual block, pooling and a classifier: fusions of several kinds (conv+bn+relu, residual
    add into the convolution, flatten+gemm)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.conv_b(torch.relu(self.conv_a(x))) + x)
        return torch.softmax(self.fc(torch.flatten(self.pool(x), 1)), dim=1)


def export_small_cnn(path: Path) -> Path:
    torch.manual_seed(0)
    module = SmallCnn()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding them matters
        module.stem[1].running_mean.uniform_(-0.5, 0.5)
        module.stem[1].running_var.uniform_(0.5, 1.5)
    module.eval()
    torch.onnx.export(module, (torch.randn(1, 3, 12, 12),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["probabilities"])
    return path


def three_convolutions(weights: list[np.ndarray], name: str) -> onnx.ModelProto:
    """x [1,4,8,8] -> conv1 -> relu1 -> conv2 -> relu2 -> conv3 -> y, each convolution with `weights[i]` (3x3 or
    1x1, same padding). The importer fuses conv1+relu1 into step conv1.fused and conv2+relu2 into conv2.fused."""
    nodes, initializers = [], []
    for index, (source, weight, target) in enumerate(zip(("x", "r1", "r2"), weights, ("c1", "c2", "y")), 1):
        pad = weight.shape[-1] // 2
        initializers.append(numpy_helper.from_array(weight.astype(np.float32), f"w{index}"))
        nodes.append(helper.make_node("Conv", [source, f"w{index}"], [target], name=f"conv{index}",
                                      pads=[pad] * 4))
        if index < 3:
            nodes.append(helper.make_node("Relu", [target], [f"r{index}"], name=f"relu{index}"))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights[2].shape[0], 8, 8])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # onnxruntime builds of the GPU machines read IR versions up to 13
    onnx.checker.check_model(model)
    return model


def int8_outlier_model() -> onnx.ModelProto:
    """A network whose conv2 alone is ruined by INT8: conv1's output channel 0 is 1000x the others, so the one
    per-tensor scale of conv2's input rounds the other channels to 0, and conv2 barely reads channel 0. conv1 and
    conv3 read well-scaled inputs and quantize to about 1% of their range."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 4, 3, 3)) * 0.3
    w1[0] *= 1000.0
    w2 = rng.standard_normal((8, 8, 1, 1)) * 0.5
    w2[:, 0] *= 1e-3
    w3 = rng.standard_normal((4, 8, 3, 3)) * 0.3
    return three_convolutions([w1, w2, w3], "int8_outlier")


def fp16_overflow_model(probe_peak: float = 16000.0) -> onnx.ModelProto:
    """A network whose conv3 output reaches `probe_peak` on standard normal inputs (below the FP16 range the builder's
    probe keeps in FP32, 32752) and, every layer being linear or ReLU, 8 times that on inputs 8 times larger: past
    FP16's 65504, so an FP16 conv3 gives infinities there. conv1 and conv2 stay small."""
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal((8, 4, 3, 3)) * 0.3, rng.standard_normal((8, 8, 3, 3)) * 0.3,
               rng.standard_normal((4, 8, 3, 3))]
    probe = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)  # the builder probe's input
    peak = np.abs(_onnxruntime(three_convolutions(weights, "fp16_overflow"), probe)).max()
    weights[2] *= probe_peak / peak
    return three_convolutions(weights, "fp16_overflow")


def _onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]
