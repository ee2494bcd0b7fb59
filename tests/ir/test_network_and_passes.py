"""IR invariants, shape inference at add time, the printer, and the passes of the first pipeline."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkiln as tk
from tensorkiln.errors import ShapeError
from tensorkiln.ir import InvariantError, format_network, verify
from tensorkiln.ir.ops import ActivationType, ElementWiseOperation, PoolingType
from tensorkiln.passes.manager import DEFAULT_PIPELINE, PassManager


def test_shapes_are_inferred_when_layers_are_added():
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (1, 3, 13, 7))
    conv = network.add_convolution(x, 8, (3, 3), np.ones((8, 3, 3, 3)), stride=2, padding=1)
    assert conv.get_output(0).shape == (1, 8, 7, 4)
    pool = network.add_pooling(conv.get_output(0), PoolingType.MAX, (2, 2), ceil_mode=True)
    assert pool.get_output(0).shape == (1, 8, 4, 2)
    flat = network.add_shuffle(pool.get_output(0), reshape_dims=(0, -1))
    assert flat.get_output(0).shape == (1, 64)


def test_incompatible_shapes_name_the_layer():
    network = tk.NetworkDefinition()
    a = network.add_input("a", tk.DataType.FLOAT, (2, 3))
    b = network.add_input("b", tk.DataType.FLOAT, (4,))
    with pytest.raises(ShapeError, match="'bad'.*elementwise"):
        network.add_elementwise(a, b, ElementWiseOperation.SUM, name="bad")


def test_verify_catches_out_of_order_layers():
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (4,))
    first = network.add_activation(x, ActivationType.RELU)
    second = network.add_activation(first.get_output(0), ActivationType.TANH)
    network.mark_output(second.get_output(0))
    verify(network.ir)
    network.ir.layers.reverse()
    with pytest.raises(InvariantError, match="before it is produced"):
        verify(network.ir)


def test_constant_folding_and_dead_layer_removal_are_counted(tmp_path):
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (2, 3))
    c = network.add_constant((3,), np.array([1, 2, 3], np.float32)).get_output(0)
    doubled = network.add_elementwise(c, c, ElementWiseOperation.SUM, name="fold_me").get_output(0)
    assert doubled.is_constant
    used = network.add_elementwise(x, doubled, ElementWiseOperation.PROD, name="used").get_output(0)
    network.add_activation(x, ActivationType.SIGMOID, name="dead")
    network.mark_output(used)
    manager = PassManager(debug=True, dump_dir=tmp_path)
    manager.run(network.ir)
    assert manager.counts() == {"fold_constants.folded": 1, "remove_dead_layers.removed": 1}
    assert [layer.name for layer in network.ir.layers] == ["used"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:02d}_{name}.txt" for i, name in enumerate(DEFAULT_PIPELINE)]
    engine = tk.Builder().build(network)
    x_value = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(engine.create_execution_context().execute({"x": x_value})["used_output_0"],
                               x_value * np.array([2, 4, 6], np.float32))


def test_printer_lists_layers_and_constants():
    network = tk.NetworkDefinition("printed")
    x = network.add_input("x", tk.DataType.FLOAT, (1, 4), dim_names=("batch", None))
    network.mark_output(network.add_fully_connected(x, 2, np.ones((2, 4)), name="fc").get_output(0))
    text = format_network(network.ir)
    assert "input  x: float32[batch=1, 4]" in text
    assert "fc = fully_connected(x, <fc.weight>" in text


@pytest.mark.parametrize("start, shape, stride", [((2, 3), (3, 2), (-1, -2)), ((4, 0), (2, 4), (-3, 1)),
                                                  ((1, 3), (2, 4), (2, -1))])
def test_add_slice_backward_through_index_zero(start, shape, stride):
    """A backward slice that runs through index 0 ends at -1 (ops.Slice's clamped form); add_slice made it -dim-1,
    which inferred a shape of 8 for x[2::-1] of 5 elements and failed at run time (found by the TFLite importer)."""
    network = tk.NetworkDefinition("slice")
    x = network.add_input("x", tk.DataType.FLOAT, (5, 4))
    network.mark_output(network.add_slice(x, start, shape, stride).get_output(0))
    engine = tk.Runtime().deserialize(tk.Builder().build(network).serialize())
    data = np.arange(20, dtype=np.float32).reshape(5, 4)
    expected = data[np.ix_(*(s + st * np.arange(n) for s, n, st in zip(start, shape, stride)))]
    (got,) = engine.create_execution_context().execute({"x": data}).values()
    assert got.shape == tuple(shape)
    np.testing.assert_array_equal(got, expected)
