"""Names stay unique by construction: a converter that emits several layers never takes a name the model uses.

Real exporter outputs are the test: the TorchScript exporter names a node's output "<node>_output_0", which is the
name tensorkiln used to give the intermediate tensor of a converter that emits two layers (Gemm -> matrix multiply +
bias), so a torch Linear on 2-d input, GPT-2's Conv1D and an LSTM cell did not build ("tensor name
'/Gemm_output_0' is used twice"). Each model is exported by both exporters, built, run and compared with
onnxruntime; a hand-made graph reproduces the collision without torch, and a model that really names two values
alike is refused with one clear line.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from onnx_case import assert_close, run_onnxruntime, run_tensorkiln
from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.onnx import parse_onnx


class _LstmLayer(nn.Module):
    """nn.LSTM's output sequence (the exporters emit one ONNX LSTM node)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def _gpt2_conv1d() -> nn.Module:
    """GPT-2's projection layer: x @ W + b written as torch.addmm on a flattened input (the Gemm pattern)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # the same computation, as transformers writes it
        class Conv1D(nn.Module):
            def __init__(self, nf: int, nx: int):
                super().__init__()
                self.weight, self.bias = nn.Parameter(torch.randn(nx, nf) * 0.1), nn.Parameter(torch.randn(nf))

            def forward(self, x):
                flat = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
                return flat.view(x.size()[:-1] + (self.bias.shape[0],))
    return Conv1D(16, 8)


# name -> (module factory, input shape); Linear on 2-d input and LSTMCell export Gemm nodes (the Linear is followed
# by a ReLU so that its Gemm's output is an inner value, named "<node>_output_0", not a numbered graph output)
MODULES = {
    "linear": (lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU()), (3, 8)),
    "gpt2_conv1d": (_gpt2_conv1d, (2, 5, 8)),
    "lstm": (_LstmLayer, (2, 5, 8)),
    "lstm_cell": (lambda: nn.LSTMCell(8, 16), (3, 8)),
}


def _exported(module: nn.Module, x: torch.Tensor, dynamo: bool, tmp_path) -> onnx.ModelProto:
    """The module exported to a file (the form users have) and read back."""
    path = tmp_path / "model.onnx"
    if dynamo:
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install onnxscript)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=dynamo, opset_version=18 if dynamo else 17,
                          input_names=["x"], verbose=False)
    return onnx.load(str(path))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", list(MODULES))
def test_exported_module_builds_and_matches_onnxruntime(tmp_path, name, dynamo):
    torch.manual_seed(0)
    factory, shape = MODULES[name]
    x = torch.randn(*shape)
    model = _exported(factory(), x, dynamo, tmp_path)
    feed = {"x": x.numpy()}
    expected = run_onnxruntime(model, feed)
    actual = run_tensorkiln(model, feed)
    assert len(actual) == len(expected) >= 1
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert_close(got, want, f"{name} ({'dynamo' if dynamo else 'TorchScript'} export), output {index}")


def test_torchscript_gemm_outputs_are_named_as_the_old_intermediates(tmp_path):
    """The precondition of the tests above: the TorchScript exporter really names a Gemm's output
    "<node>_output_0", the name a two-layer converter's intermediate once took."""
    model = _exported(MODULES["gpt2_conv1d"][0](), torch.randn(2, 5, 8), False, tmp_path)
    gemms = [node for node in model.graph.node if node.op_type == "Gemm"]
    assert gemms and all(node.output[0] == f"{node.name}_output_0" for node in gemms)


def _gemm_model(gemm_output: str, follower_output: str = "y") -> onnx.ModelProto:
    """x -> Gemm (node "/fc/Gemm", with a bias: two layers in tensorkiln) -> Relu -> y."""
    rng = np.random.default_rng(3)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])
    y = helper.make_tensor_value_info(follower_output, TensorProto.FLOAT, [3, 4])
    weights = [numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc.weight"),
               numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fc.bias")]
    nodes = [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], [gemm_output], name="/fc/Gemm", transB=1),
             helper.make_node("Relu", [gemm_output], [follower_output], name="/relu/Relu")]
    graph = helper.make_graph(nodes, "gemm_names", [x], [y], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("gemm_output, follower_output", [
    ("/fc/Gemm_output_0", "y"),  # the TorchScript exporter's own name for the Gemm's result
    ("g", "/fc/Gemm_output_0"),  # a later node's value has the name a generated one would take
])
def test_handmade_gemm_with_exporter_style_names(gemm_output, follower_output):
    model = _gemm_model(gemm_output, follower_output)
    feed = {"x": np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)}
    network = parse_onnx(model)
    names = [t.name for t in network.ir.tensors()]
    assert len(names) == len(set(names)), f"tensor names repeat: {names}"
    assert gemm_output in names and follower_output in names  # the model's own names are kept
    assert_close(run_tensorkiln(model, feed)[0], run_onnxruntime(model, feed)[0], "Gemm -> Relu")


def _relu_pair(first: tuple[str, str], second: tuple[str, str]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", [first[0]], [first[1]], name="first"),
             helper.make_node("Neg", [second[0]], [second[1]], name="second")]
    return helper.make_model(helper.make_graph(nodes, "twice", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("first, second, owners", [
    (("x", "y"), ("x", "y"), "an output of node 'first' and an output of node 'second'"),
    (("x", "x"), ("x", "y"), "a graph input and an output of node 'first'"),
], ids=["two_nodes", "node_and_input"])
def test_a_model_that_names_one_value_twice_is_refused(first, second, owners):
    model = _relu_pair(first, second)
    with pytest.raises(ModelFormatError) as error:
        parse_onnx(model)
    message = str(error.value)
    assert "\n" not in message
    assert f"names two values {first[1]!r} ({owners})" in message and "malformed" in message


def test_an_initializer_named_like_a_node_output_is_refused():
    model = _relu_pair(("x", "h"), ("h", "y"))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((2, 3), np.float32), "h"))
    with pytest.raises(ModelFormatError, match=r"names two values 'h' \(an initializer and an output of node "
                                               r"'first'\)"):
        parse_onnx(model)


def test_network_api_names_never_take_a_reserved_name():
    """The same guarantee through the network API that every converter uses."""
    network = tk.NetworkDefinition("reserved")
    network.ir.reserve_names(["relu_output_0", "relu"])
    x = network.add_input("x", tk.DataType.FLOAT, (2, 2))
    layer = network.add_activation(x, tk.ActivationType.RELU, name="relu")
    assert layer.get_output(0).name not in ("relu_output_0", "relu")
    with pytest.raises(ModelFormatError, match="'x' is used twice"):
        network.ir.claim_name("x")
