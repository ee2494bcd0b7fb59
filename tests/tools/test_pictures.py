"""Pictures of an engine: `kiln inspect --graph` (SVG: a box per step with its tactic, arrows along the data),
`kiln inspect --json` (the plan, for tools) and `kiln bench --dump-profile --plot` (PNG bar chart of layer times).
Each is checked for its content, not only for its existence."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln as tk
from tensorkiln.cli.main import main as kiln
from tensorkiln.tools.draw_engine import engine_svg
from tensorkiln.tools.plot_profile import ROW, TOP, WIDTH, plot_profile

SVG = "{http://www.w3.org/2000/svg}"


def branching_model() -> onnx.ModelProto:
    """conv -> BN -> relu, then two branches that meet again: fused steps and an arrow that skips a row."""
    rng = np.random.default_rng(0)
    weights = {"W": rng.standard_normal((4, 3, 3, 3)), "scale": rng.uniform(0.5, 2, 4), "shift": rng.standard_normal(4),
               "mean": rng.standard_normal(4), "var": rng.uniform(0.5, 2, 4), "W2": rng.standard_normal((4, 4, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Conv", ["r", "W2"], ["c2"]),
             helper.make_node("Sigmoid", ["c2"], ["s"]),
             helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "up_scales"], ["u"], mode="nearest"),
             helper.make_node("Add", ["u", "r"], ["y"])]
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up_scales"))
    graph = helper.make_graph(nodes, "branching", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def engine_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    onnx.save(branching_model(), folder / "model.onnx")
    assert kiln(["build", str(folder / "model.onnx"), "-o", str(folder / "model.engine")]) == 0
    return folder / "model.engine"


def _plan(engine_file):
    return tk.Runtime().load(engine_file).plan


def test_svg_has_a_box_per_step_with_its_tactic_and_an_arrow_per_data_edge(engine_file, tmp_path):
    svg_path = tmp_path / "engine.svg"
    assert kiln(["inspect", str(engine_file), "--graph", str(svg_path)]) == 0
    plan = _plan(engine_file)
    root = ET.fromstring(svg_path.read_text())  # well-formed XML
    assert root.tag == f"{SVG}svg"
    boxes = root.findall(f"{SVG}g[@class='step']")
    assert [box.get("id") for box in boxes] == [f"step-{i}" for i in range(len(plan.steps))]
    fused = [step for step in plan.steps if len(step.fused_from) > 1]
    assert fused, "the model should give a fused step"
    for box, step in zip(boxes, plan.steps):
        text = " ".join(t.text for t in box.iter(f"{SVG}text"))
        assert step.name in text and step.kind in text and f"tactic: {step.tactic}" in text, text
        for output in step.outputs:
            spec = next(t for t in (*plan.tensors, *plan.outputs) if t.name == output)
            assert "x".join(map(str, spec.shape)) in text
        if step in fused:
            assert "fused: " + " + ".join(step.fused_from) in box.find(f"{SVG}title").text
    weights = {w.name for w in plan.weights}
    edges = {(step_index, name) for step_index, step in enumerate(plan.steps) for name in step.inputs
             if name is not None and name not in weights}
    arrows = root.findall(f"{SVG}path[@class='edge']")
    assert len(arrows) == len(edges) + len(plan.outputs)  # each read of an activation, and each engine output
    assert any(" C" in arrow.get("d") for arrow in arrows)  # the residual reaches past its neighbour: an arc
    assert len(root.findall(f"{SVG}g[@class='input']")) == 1 and len(root.findall(f"{SVG}g[@class='output']")) == 1


def test_svg_escapes_names(engine_file):
    plan = _plan(engine_file)
    import dataclasses

    step = dataclasses.replace(plan.steps[0], name="a<b>&\"c\"")
    svg = engine_svg(dataclasses.replace(plan, steps=(step, *plan.steps[1:])))
    root = ET.fromstring(svg)
    assert 'a<b>&"c"' in root.find(f"{SVG}g[@id='step-0']/{SVG}text").text


def test_inspect_json_holds_the_plan_and_nothing_else(engine_file, capsys):
    assert kiln(["inspect", str(engine_file), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    plan = _plan(engine_file)
    assert [s["name"] for s in described["plan"]["steps"]] == [s.name for s in plan.steps]
    assert [s["tactic"] for s in described["plan"]["steps"]] == [s.tactic for s in plan.steps]
    assert described["format_version"] == "1" and described["file_bytes"] == engine_file.stat().st_size
    assert described["weights_bytes"] == sum(w.nbytes for w in plan.weights)


def test_bench_plot_draws_a_bar_per_layer(engine_file, tmp_path, capsys):
    from PIL import Image

    png, figures = tmp_path / "profile.png", tmp_path / "figures.json"
    assert kiln(["bench", str(engine_file), "--iterations", "3", "--duration", "0", "--warmup", "1",
                 "--plot", str(png), "--json", str(figures)]) == 0  # --plot implies --dump-profile
    profile = json.loads(figures.read_text())["profile"]
    assert len(profile) == len(_plan(engine_file).steps)
    image = Image.open(png)
    assert image.format == "PNG" and image.size == (WIDTH, TOP + ROW * len(profile) + 30)
    pixels = np.asarray(image.convert("RGB"))
    for index in range(len(profile)):  # each row has a bar: colored pixels (not white, not gray text)
        row = pixels[TOP + ROW * index + ROW // 2]
        colored = (row.max(axis=1).astype(int) - row.min(axis=1)) > 60
        assert colored.sum() >= 1, index


def test_plot_bar_lengths_follow_the_times(tmp_path):
    from PIL import Image

    profile = [{"name": "fast", "kind": "k", "median_ms": 1.0}, {"name": "slow", "kind": "k", "median_ms": 4.0}]
    assert plot_profile(profile, tmp_path / "p.png") == (WIDTH, TOP + 2 * ROW + 30)
    pixels = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    lengths = [int(((pixels[TOP + ROW * i + ROW // 2].max(1) - pixels[TOP + ROW * i + ROW // 2].min(1)) > 60).sum())
               for i in range(2)]
    assert 3.5 < lengths[1] / lengths[0] < 4.5, lengths  # the text beside the bars is gray: not counted
