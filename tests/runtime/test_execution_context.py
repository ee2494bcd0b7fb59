"""ExecutionContext: I/O introspection, input checks before any work, numpy and torch inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tensorkiln as tk
from tensorkiln.errors import InputError
from tensorkiln.ir.ops import ElementWiseOperation
from tensorkiln.runtime import TensorIOMode


@pytest.fixture(scope="module")
def engine():
    network = tk.NetworkDefinition("add")
    a = network.add_input("a", tk.DataType.FLOAT, (3, 5), dim_names=("batch", None))
    b = network.add_input("b", tk.DataType.FLOAT, (5,))
    network.mark_output(network.add_elementwise(a, b, ElementWiseOperation.SUM, name="sum").get_output(0))
    return tk.Builder().build(network)


def test_io_introspection(engine):
    assert engine.num_io_tensors == 3
    assert [engine.get_tensor_name(i) for i in range(3)] == ["a", "b", "sum_output_0"]
    assert engine.get_tensor_mode("a") is TensorIOMode.INPUT
    assert engine.get_tensor_mode("sum_output_0") is TensorIOMode.OUTPUT
    assert engine.get_tensor_shape("a") == (3, 5)
    assert engine.inputs[0].dim_names == ("batch", None)
    assert engine.get_tensor_dtype("b") is tk.DataType.FLOAT


def test_numpy_in_numpy_out_and_torch_in_torch_out(engine):
    context = engine.create_execution_context()
    a, b = np.arange(15, dtype=np.float32).reshape(3, 5), np.linspace(-1, 1, 5, dtype=np.float32)
    out = context.execute({"a": a, "b": b})["sum_output_0"]
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, a + b)
    out_torch = context.execute({"a": torch.from_numpy(a), "b": torch.from_numpy(b)})["sum_output_0"]
    assert isinstance(out_torch, torch.Tensor)
    np.testing.assert_array_equal(out_torch.numpy(), a + b)


@pytest.mark.parametrize("feed, message", [
    ({"a": np.zeros((3, 5), np.float32)}, "missing inputs \\['b'\\]"),
    ({"a": np.zeros((3, 5), np.float32), "b": np.zeros(5, np.float32), "c": 1}, "unknown input names \\['c'\\]"),
    ({"a": np.zeros((4, 5), np.float32), "b": np.zeros(5, np.float32)}, "shape \\(4, 5\\).*built for \\(3, 5\\)"),
    ({"a": np.zeros((3, 5), np.float64), "b": np.zeros(5, np.float32)}, "dtype float64.*expects float32"),
])
def test_bad_inputs_are_rejected_clearly(engine, feed, message):
    with pytest.raises(InputError, match=message):
        engine.create_execution_context().execute(feed)


def test_contexts_share_one_engine(engine):
    first, second = engine.create_execution_context(), engine.create_execution_context()
    feed = {"a": np.ones((3, 5), np.float32), "b": np.ones(5, np.float32)}
    np.testing.assert_array_equal(first.execute(feed)["sum_output_0"], second.execute(feed)["sum_output_0"])


def test_opt_level_bounds_the_tactics_timed():
    from tensorkiln.kernels.registry import KernelEntry
    from tensorkiln.tactics.selection import prune_for_opt_level

    def entry(impl):
        return KernelEntry("convolution", "cuda", impl, lambda op, inputs: [])

    found = [entry("torch"), entry("cudnn_fused"), entry("triton_igemm_bm128"), entry("triton_igemm_bm64"),
             entry("triton_depthwise_bp32")]
    assert [e.impl for e in prune_for_opt_level(found, 1)] == ["torch", "cudnn_fused"]
    assert [e.impl for e in prune_for_opt_level(found, 2)] == ["torch", "cudnn_fused", "triton_igemm_bm128",
                                                               "triton_depthwise_bp32"]
    assert prune_for_opt_level(found, 3) == found
    assert [e.impl for e in prune_for_opt_level(found[2:], 1)] == ["triton_igemm_bm128"]  # never nothing


def test_disabled_tactic_sources_are_never_chosen():
    from tensorkiln.errors import BuildError
    from tensorkiln.ir import ops
    from tensorkiln.ir.dtypes import DataType
    from tensorkiln.ir.graph import Layer, Tensor
    from tensorkiln.tactics.selection import layer_candidates, select_tactic, tactic_source

    def spec(shape, constant=False):
        return Tensor("t", DataType.FLOAT, shape, value=np.zeros(shape, np.float32) if constant else None)

    op = ops.FusedConvolution((1, 1), (0, 0, 0, 0), (1, 1), 1, activation=ops.ActivationType.RELU)
    layer = Layer("conv", op, [spec((1, 40, 7, 7)), spec((24, 40, 1, 1), True), spec((24,), True)],
                  [spec((1, 24, 7, 7))])
    assert {tactic_source(e.impl) for e in layer_candidates(layer, "cuda")} == {"torch", "cudnn", "cublaslt", "triton"}
    libraries = ("cudnn", "cublaslt", "triton")
    assert select_tactic(layer, "cuda", disabled_sources=libraries) == "cuda.fused_convolution.torch"
    chosen = select_tactic(layer, "cuda", timer=lambda layer, found: found[-1], disabled_sources=("torch", "cudnn"))
    assert chosen.split(".")[-1].startswith(("cublaslt", "triton"))
    with pytest.raises(BuildError, match=r"'conv' of kind 'fused_convolution' has cuda kernels from .*cudnn.*"
                                         r"enable one \(e.g. --tactic-sources=\+cublaslt\)"):
        select_tactic(layer, "cuda", disabled_sources=("torch",) + libraries)


def test_a_build_names_unknown_tactic_sources():
    from tensorkiln.builder import Builder, BuilderConfig
    from tensorkiln.errors import BuildError

    network = tk.NetworkDefinition()
    network.mark_output(network.add_activation(network.add_input("x", tk.DataType.FLOAT, (2, 3)),
                                               tk.ActivationType.RELU).get_output(0))
    with pytest.raises(BuildError, match=r"unknown tactic sources \['cublas'\]; the sources are torch, cudnn"):
        Builder(BuilderConfig(disabled_tactic_sources=("cublas",))).build(network)
    with pytest.raises(BuildError, match="has cpu kernels from torch only, and the build disables them"):
        Builder(BuilderConfig(disabled_tactic_sources=("torch",))).build(network)


def test_bound_inputs_are_read_where_they_lie(engine):
    context = engine.create_execution_context()
    a, b = torch.arange(15, dtype=torch.float32).reshape(3, 5), torch.linspace(-1, 1, 5)
    context.set_input_tensor("a", a)
    context.set_input_tensor("b", b)
    torch.testing.assert_close(context.execute()["sum_output_0"], a + b, rtol=0, atol=0)
    a.mul_(2)  # a new request, written into the bound tensor
    torch.testing.assert_close(context.execute_async()["sum_output_0"], a + b, rtol=0, atol=0)


@pytest.mark.parametrize("name, value, message", [
    ("c", torch.zeros(5), "unknown input name 'c'"),
    ("a", np.zeros((3, 5), np.float32), "bind a torch tensor on cpu"),
    ("a", torch.zeros(4, 5), "shape \\(4, 5\\).*built for \\(3, 5\\)"),
    ("a", torch.zeros(3, 5, dtype=torch.float64), "dtype float64.*expects float32"),
])
def test_bad_bindings_are_rejected_clearly(engine, name, value, message):
    with pytest.raises(InputError, match=message):
        engine.create_execution_context().set_input_tensor(name, value)


def test_executing_without_inputs_names_the_unbound_ones(engine):
    context = engine.create_execution_context()
    context.set_input_tensor("a", torch.zeros(3, 5))
    with pytest.raises(InputError, match="inputs \\['b'\\] are not bound.*set_input_tensor"):
        context.execute_async()
