"""Resource limits (issue 18): tiny files that declare huge tensors are refused, before anything is allocated, with
one ResourceLimitError naming the tensor, its size, the budget and the flag that raises it.

The findings, each written here as the tiny file it was: a 200-byte ONNX model whose ConstantOfShape makes 10^10
elements (37 GiB asked for during constant folding at import); models whose inputs or Expand outputs have 10^10
elements (they built, then `kiln run` asked for 40 GB); a Caffe `input_dim: 100000` (100 GiB). Every test that
could allocate runs under an address-space cap (RLIMIT_AS, a few GiB above what the process maps already), so a
regression fails with a MemoryError instead of taking the machine's memory.
"""
from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.builder import Builder, BuilderConfig
from tensorkiln.cli.inputs import load_inputs, make_feed
from tensorkiln.cli.main import main as kiln_main
from tensorkiln.errors import ResourceLimitError
from tensorkiln.importers.caffe import parse_caffe
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.ir.ops import ActivationType
from tensorkiln.limits import DEFAULT_BUDGET_CAP, GiB, ResourceLimits, enforced, machine_memory_bytes
from tensorkiln.plan import TensorSpec

HUGE = 100_000  # a 100000 x 100000 float32 tensor: 37.3 GiB, past the default budget on any machine (<= 32 GiB)
HEADROOM = 4 * GiB  # what a test may map beyond what the process maps when it starts


@contextlib.contextmanager
def address_space_cap():
    """Cap this process's address space near its current size while the block runs (Linux; elsewhere a no-op)."""
    status = Path("/proc/self/status")
    if not status.exists():
        yield
        return
    mapped = int(re.search(r"VmSize:\s+(\d+) kB", status.read_text()).group(1)) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + HEADROOM if hard == resource.RLIM_INFINITY else min(mapped + HEADROOM, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def onnx_model(nodes, inputs=(), initializers=(), output_type=TensorProto.FLOAT) -> bytes:
    graph = helper.make_graph(nodes, "tiny", list(inputs), [helper.make_tensor_value_info("y", output_type, None)],
                              [numpy_helper.from_array(np.asarray(value), name) for name, value in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def shape_initializer(*dims: int):
    return "shape", np.array(dims, dtype=np.int64)


# each a model of a few hundred bytes that declares a 10^10-element tensor
TINY_HUGE_MODELS = {
    "ConstantOfShape": onnx_model([helper.make_node("ConstantOfShape", ["shape"], ["y"])],
                                  initializers=[shape_initializer(HUGE, HUGE)]),
    "Expand of a constant": onnx_model([helper.make_node("Expand", ["one", "shape"], ["y"])],
                                       initializers=[("one", np.ones((1, 1), np.float32)),
                                                     shape_initializer(HUGE, HUGE)]),
    "Expand of an input": onnx_model([helper.make_node("Expand", ["x", "shape"], ["y"])],
                                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                                     [shape_initializer(HUGE, HUGE)]),
    "Tile of a constant": onnx_model([helper.make_node("Tile", ["one", "shape"], ["y"])],
                                     initializers=[("one", np.ones((1, 1), np.float32)),
                                                   shape_initializer(HUGE, HUGE)]),
    "Range": onnx_model([helper.make_node("Range", ["start", "limit", "delta"], ["y"])],
                        initializers=[("start", np.array(0, np.int64)), ("limit", np.array(HUGE * HUGE, np.int64)),
                                      ("delta", np.array(1, np.int64))], output_type=TensorProto.INT64),
    "HannWindow": onnx_model([helper.make_node("HannWindow", ["size"], ["y"])],
                             initializers=[("size", np.array(HUGE * HUGE, np.int64))]),
    "MelWeightMatrix": onnx_model([helper.make_node("MelWeightMatrix", ["bins", "dft", "rate", "low", "high"], ["y"])],
                                  initializers=[("bins", np.array(HUGE, np.int64)),
                                                ("dft", np.array(2 * HUGE, np.int64)),
                                                ("rate", np.array(16000, np.int64)), ("low", np.array(0, np.float32)),
                                                ("high", np.array(8000, np.float32))]),
    "input": onnx_model([helper.make_node("Relu", ["x"], ["y"])],
                        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [HUGE, HUGE])]),
}


# ---- the budget ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [("8GiB", 8 * GiB), ("8G", 8 * GiB), ("512 MiB", 512 << 20),
                                            ("1.5GiB", 3 * GiB // 2), ("64GB", 64 * 10 ** 9), ("100000", 100000),
                                            ("4kB", 4000), ("2KiB", 2048), ("1TiB", 1 << 40)])
def test_sizes_are_read_in_binary_and_decimal_units(text, expected):
    assert ResourceLimits.from_text(text).memory_budget_bytes == expected


@pytest.mark.parametrize("text", ["", "GiB", "8 GiBs", "-1GiB", "0", "0.0001B", "1e9", "eight"])
def test_malformed_sizes_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="8GiB"):
        ResourceLimits.from_text(text)


@pytest.mark.parametrize("budget", [0, -5, 1.5, True, "8GiB"])
def test_a_budget_is_a_positive_number_of_bytes(budget):
    with pytest.raises(ValueError, match="positive number of bytes"):
        ResourceLimits(budget)


def test_the_default_is_half_the_machine_at_most_the_cap():
    default = ResourceLimits().memory_budget_bytes
    assert default == min(machine_memory_bytes() // 2, DEFAULT_BUDGET_CAP)
    assert 0 < default < 37 * GiB  # so the 10^10-element findings are refused on any machine


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_the_default_follows_an_address_space_limit_set_after_import():
    """A fuzzing worker caps its address space: the default budget is then half of that, not of the machine."""
    with address_space_cap():
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        assert ResourceLimits().memory_budget_bytes == min(soft, machine_memory_bytes()) // 2 <= soft // 2


def test_the_error_names_the_tensor_its_size_the_budget_and_the_fix():
    with pytest.raises(ResourceLimitError) as raised:
        ResourceLimits(8 * GiB).check_tensor("tensor 'y'", (HUGE, HUGE), np.float32)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in ("tensor 'y'", "float32[100000, 100000]", "37.3 GiB", "8 GiB", "--memory-budget 64GiB",
                     "ResourceLimits.from_text('64GiB')"):
        assert fragment in message, message


def test_a_tensor_of_exactly_the_budget_fits():
    limits = ResourceLimits(4 * 6)
    assert limits.check_tensor("x", (2, 3), tk.DataType.FLOAT) == 24
    with pytest.raises(ResourceLimitError):
        limits.check_tensor("x", (2, 3), tk.DataType.DOUBLE)


# ---- import -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("finding", sorted(TINY_HUGE_MODELS))
def test_a_tiny_onnx_model_declaring_10e10_elements_is_refused_before_allocating(finding):
    model = TINY_HUGE_MODELS[finding]
    assert len(model) < 300
    start = time.perf_counter()
    with address_space_cap(), pytest.raises(ResourceLimitError) as raised:
        parse_onnx(model)
    assert time.perf_counter() - start < 5
    message = str(raised.value)
    assert re.search(r"\[(10000[01], 100000|10000000000)\]\) needs (37.3|74.5) GiB", message), message
    assert "--memory-budget" in message


def test_the_flag_s_budget_lets_a_large_input_through():
    """An input is not allocated at build time: with a raised budget the model builds."""
    with address_space_cap():
        network = parse_onnx(TINY_HUGE_MODELS["input"], limits=ResourceLimits(64 * GiB))
        engine = Builder(BuilderConfig(limits=ResourceLimits(128 * GiB))).build(network)
    assert engine.plan.inputs[0].shape == (HUGE, HUGE)


def test_a_caffe_input_dim_of_100000_is_refused(tmp_path):
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text('name: "big"\ninput: "data"\ninput_dim: 100000\ninput_dim: 3\ninput_dim: 300\n'
                      'input_dim: 300\nlayer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n')
    with address_space_cap(), pytest.raises(ResourceLimitError, match=r"input 'data' \(float32\[100000, 3, 300, "
                                                                       r"300\]\) needs 100.6 GiB"):
        parse_caffe(deploy)
    network = parse_caffe(deploy, input_shapes={"data": (1, 3, 300, 300)})  # a sensible batch builds
    assert network.ir.inputs[0].shape == (1, 3, 300, 300)


def test_constants_are_bounded_together():
    """Many constants, each within the budget, that together are past it: the one that crosses it is refused."""
    quarter = 1 << 18  # 256 KiB of float32 each, against a 1 MiB budget
    nodes = [helper.make_node("ConstantOfShape", ["shape"], [f"c{i}"]) for i in range(4)]
    nodes.append(helper.make_node("Sum", [f"c{i}" for i in range(4)], ["y"]))
    model = onnx_model(nodes, initializers=[shape_initializer(quarter // 4)])
    with pytest.raises(ResourceLimitError, match=r"the network's constants \(768 KiB\) with output 'c3'"):
        parse_onnx(model, limits=ResourceLimits((1 << 20) - 1))
    # folded values are held too: the Sum's three additions and the output's copy, 1 MiB more
    assert parse_onnx(model, limits=ResourceLimits(3 << 20)).ir.outputs
    with pytest.raises(ResourceLimitError, match=r"need 2 MiB \(2097160 bytes\), more than the memory budget of 2 MiB "
                                                 r"\(2097152 bytes\)"):  # the shape initializer's 8 bytes
        parse_onnx(model, limits=ResourceLimits(2 << 20))


def test_a_constant_layer_is_sized_on_the_meta_device_before_it_is_evaluated():
    network = tk.NetworkDefinition("fold", limits=ResourceLimits(1 << 20))
    one = network.add_constant((1, 1), np.ones((1, 1), np.float32), name="one").get_output(0)
    with address_space_cap(), pytest.raises(ResourceLimitError, match=r"output 0 of layer 'tile' \(tile\)"):
        network.add_layer(tk.ir.ops.Tile((HUGE, HUGE)), [one], "tile")
    small = network.add_layer(tk.ir.ops.Tile((256, 256)), [one], "small_tile").get_output(0)  # 256 KiB: folded
    assert small.value.shape == (256, 256) and network.constant_bytes == 4 + (256 * 256 * 4)


def test_passes_evaluate_constants_under_the_builder_s_budget():
    """Rewrites of the passes fold through ir.infer with no limits passed: the build's own apply (enforced)."""
    from tensorkiln.ir.graph import Tensor
    from tensorkiln.ir.infer import infer_layer

    one = Tensor("one", tk.DataType.FLOAT, (1, 1), value=np.ones((1, 1), np.float32))
    with enforced(ResourceLimits(1024)), pytest.raises(ResourceLimitError, match="1 KiB"):
        infer_layer(tk.ir.ops.Tile((32, 32)), [one], "tile")  # 4 KiB
    assert infer_layer(tk.ir.ops.Tile((16, 16)), [one], "tile")[0].value.shape == (16, 16)  # default budget


# ---- build --------------------------------------------------------------------------------------------------------
def _dense_network() -> tk.NetworkDefinition:
    """input (1, 16) -> fully connected to 4096 -> ReLU -> fully connected to 16: 512 KiB of weights (and 16 KiB of
    biases), a 16 KiB activation in the arena, 64-byte input and output."""
    network = tk.NetworkDefinition("dense")
    x = network.add_input("x", tk.DataType.FLOAT, (1, 16))
    rng = np.random.default_rng(0)
    wide = network.add_fully_connected(x, 4096, rng.standard_normal((4096, 16)), rng.standard_normal(4096))
    relu = network.add_activation(wide.get_output(0), ActivationType.RELU)
    narrow = network.add_fully_connected(relu.get_output(0), 16, rng.standard_normal((16, 4096)),
                                         rng.standard_normal(16))
    network.mark_output(narrow.get_output(0))
    return network


def test_the_builder_refuses_weights_and_arena_past_the_budget_and_builds_just_under_it():
    engine = Builder().build(_dense_network())
    needed = engine.weights_nbytes + engine.arena_nbytes
    assert engine.arena_nbytes > 0
    just_under = Builder(BuilderConfig(limits=ResourceLimits(needed))).build(_dense_network())
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    name = engine.plan.outputs[0].name
    np.testing.assert_array_equal(just_under.create_execution_context().execute({"x": x})[name],
                                  engine.create_execution_context().execute({"x": x})[name])
    with pytest.raises(ResourceLimitError, match=r"the engine's weights \(528.1 KiB\) and activation arena \(16 KiB\)"):
        Builder(BuilderConfig(limits=ResourceLimits(needed - 1))).build(_dense_network())
    with pytest.raises(ResourceLimitError, match=r"the engine's weights \(4 tensors\) need 528.1 KiB"):
        Builder(BuilderConfig(limits=ResourceLimits(engine.weights_nbytes - 1))).build(_dense_network())


# ---- run ----------------------------------------------------------------------------------------------------------
def test_a_context_refuses_an_engine_whose_inputs_or_activations_are_past_the_budget():
    engine = Builder().build(_dense_network())
    with pytest.raises(ResourceLimitError, match="engine input 'x'"):
        engine.create_execution_context(limits=ResourceLimits(63))
    with pytest.raises(ResourceLimitError, match=r"engine tensor '.*' \(float32\[1, 4096\]\) needs 16 KiB"):
        engine.create_execution_context(limits=ResourceLimits(1024))
    x = np.ones((1, 16), np.float32)
    assert engine.create_execution_context(limits=ResourceLimits(1 << 20)).execute({"x": x})


def _npy_header_only(path: Path, shape: tuple[int, ...], descr: str = "<f4") -> None:
    """An .npy file of a hundred bytes whose header declares `shape`."""
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": descr, "fortran_order": False, "shape": shape})
        file.write(bytes(64))


def test_input_files_declaring_huge_arrays_are_refused_before_numpy_allocates(tmp_path):
    specs = [TensorSpec("x", tk.DataType.FLOAT, (2, 3))]
    _npy_header_only(tmp_path / "huge.npy", (HUGE, HUGE))
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (HUGE, HUGE)})
    with address_space_cap():
        for item, where in (("x:huge.npy", "the array in"), ("huge.npz", "array 'x.npy' in")):
            with pytest.raises(ResourceLimitError, match=f"{where} '.*huge.np.' \\(float32\\[100000, 100000\\]\\)"):
                load_inputs([str(tmp_path / item) if ":" not in item else f"x:{tmp_path / 'huge.npy'}"], specs)


def test_random_inputs_past_the_budget_are_refused():
    specs = [TensorSpec("x", tk.DataType.FLOAT, (HUGE, HUGE))]
    with address_space_cap(), pytest.raises(ResourceLimitError, match="random values for input 'x'"):
        make_feed(specs, None, seed=0)
    # booleans are drawn as float64 before the comparison: their check counts that
    with pytest.raises(ResourceLimitError, match=r"float64\[16\]"):
        make_feed([TensorSpec("mask", tk.DataType.BOOL, (16,))], None, seed=0, limits=ResourceLimits(100))


# ---- the command line ---------------------------------------------------------------------------------------------
# `kiln` as a script that also writes its peak resident memory (KiB on Linux) to a file
# The peak RSS of the kiln process itself: on Linux its VmHWM (kB), which starts afresh at exec. ru_maxrss does not:
# it keeps the forked pytest process's peak, over 1 GiB late in a full run, which failed these tests there.
_KILN_MEASURED = ("import os, resource, sys\nfrom tensorkiln.cli.main import main\ncode = main(sys.argv[1:])\n"
                  "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
                  "if os.path.exists('/proc/self/status'):\n"
                  "    peak = next(int(line.split()[1]) for line in open('/proc/self/status')\n"
                  "                if line.startswith('VmHWM'))\n"
                  "with open(os.environ['KILN_PEAK_RSS_FILE'], 'w') as out:\n"
                  "    out.write(str(peak))\nsys.exit(code)\n")


def _kiln_capped(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`kiln` in a process of its own with a 4 GiB address space (a real 37 GiB allocation could not succeed);
    `.peak_rss_bytes` on the result."""
    package_root = str(Path(tk.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
           "KILN_PEAK_RSS_FILE": str(cwd / "peak_rss.txt")}

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * GiB, resource.getrlimit(resource.RLIMIT_AS)[1]))

    result = subprocess.run([sys.executable, "-c", _KILN_MEASURED, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=120, preexec_fn=cap if sys.platform == "linux" else None)
    result.peak_rss_bytes = int((cwd / "peak_rss.txt").read_text()) * (1 if sys.platform == "darwin" else 1024)
    return result


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stderr.startswith("kiln: error: ") and result.stderr.count("\n") == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert result.peak_rss_bytes < GiB, result.peak_rss_bytes  # torch and the CLI: about 250 MiB; no tensor data


def test_kiln_build_of_the_constant_of_shape_model_exits_2_at_once(tmp_path):
    (tmp_path / "cos.onnx").write_bytes(TINY_HUGE_MODELS["ConstantOfShape"])
    start = time.perf_counter()
    result = _kiln_capped("build", "cos.onnx", cwd=tmp_path)
    _assert_one_line_error(result, "ConstantOfShape", "37.3 GiB", "--memory-budget 64GiB")
    assert time.perf_counter() - start < 60 and not (tmp_path / "cos.engine").exists()


def test_kiln_run_refuses_an_npy_declaring_10e10_floats(tmp_path):
    engine = Builder().build(_dense_network())
    engine.save(tmp_path / "dense.engine")
    _npy_header_only(tmp_path / "huge.npy", (HUGE, HUGE))
    result = _kiln_capped("run", "dense.engine", "--inputs", "x:huge.npy", cwd=tmp_path)
    _assert_one_line_error(result, "the array in 'huge.npy'", "37.3 GiB")


def test_the_memory_budget_flag_sets_and_raises_the_budget(tmp_path, capsys):
    model = tmp_path / "relu.onnx"
    model.write_bytes(onnx_model([helper.make_node("Relu", ["x"], ["y"])],
                                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])]))
    assert kiln_main(["build", str(model), "--memory-budget", "2KiB"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input 'x' (float32[1, 1000]) needs 3.9 KiB" in err and "2 KiB" in err
    assert kiln_main(["build", str(model), "--memory-budget", "1MiB"]) == 0
    engine = str(model.with_suffix(".engine"))
    assert kiln_main(["run", engine, "--memory-budget", "2KiB"]) == 2
    assert "random values for input 'x'" in capsys.readouterr().err
    assert kiln_main(["bench", engine, "--memory-budget", "2KiB", "--iterations", "1", "--duration", "0"]) == 2
    assert kiln_main(["run", engine, "--memory-budget", "1MiB"]) == 0
    assert kiln_main(["run", engine, "--memory-budget", "lots"]) == 2
    assert "memory size 'lots' is not a number with a unit" in capsys.readouterr().err


# ---- layers -------------------------------------------------------------------------------------------------------
def _loop_model(trips: int) -> bytes:
    """y = x + trips, as a Loop of `trips` iterations (unrolled at import: about 5 layers per iteration)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["x_in", "one"], ["x_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    return onnx_model([helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [("trips", np.array(trips, np.int64))])


def test_a_loop_unrolled_a_billion_times_stops_at_the_layer_limit():
    model = _loop_model(10 ** 9)
    assert len(model) < 300
    start = time.perf_counter()
    with address_space_cap(), pytest.raises(ResourceLimitError, match=r"would be layer 2001 of the network, more "
                                                                       r"than the 2000 layers allowed"):
        parse_onnx(model, limits=ResourceLimits(max_layers=2000))
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("max_layers", [0, -1, 2.5])
def test_max_layers_is_a_positive_count(max_layers):
    with pytest.raises(ValueError, match="max_layers"):
        ResourceLimits(max_layers=max_layers)


def test_kiln_build_max_layers(tmp_path, capsys):
    model = tmp_path / "loop.onnx"
    model.write_bytes(_loop_model(10))
    assert kiln_main(["build", str(model), "--max-layers", "20"]) == 2
    assert "--max-layers 40" in capsys.readouterr().err
    assert kiln_main(["build", str(model), "--max-layers", "1000", "--memory-budget", "1MiB"]) == 0
    engine = tk.Runtime().load(model.with_suffix(".engine"))
    assert engine.create_execution_context().execute({"x": np.array([1.5], np.float32)})["y"] == 11.5


def test_kiln_build_input_values_refuses_a_huge_npy_header(tmp_path, capsys):
    model = tmp_path / "add.onnx"
    model.write_bytes(onnx_model([helper.make_node("Add", ["x", "bias"], ["y"])],
                                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                  helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, 4])]))
    _npy_header_only(tmp_path / "bias.npy", (HUGE, HUGE))
    with address_space_cap():
        assert kiln_main(["build", str(model), "--input-values", f"bias:{tmp_path / 'bias.npy'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bias.npy' (float32[100000, 100000]) needs 37.3 GiB" in err, err
