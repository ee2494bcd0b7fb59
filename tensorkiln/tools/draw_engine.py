"""A picture of an engine's plan as SVG (`kiln inspect ENGINE --graph engine.svg`), written without dependencies.

Each step is a box, in execution order from top to bottom: its name, kind, tactic, precision, output shapes and
dtypes, and for a fused step the original layers it implements (its fused group). The box's color says its
precision. Arrows run from the step (or engine input) that writes a tensor to each step that reads it: between
neighbours straight down, further ones as arcs on the right, wider the further they reach. Every box is an SVG group
(class "step", id "step-<index>") whose <title> holds its full text, so a browser shows it on hover.
"""
from __future__ import annotations

from xml.sax.saxutils import escape

from ..plan import Plan

BOX_WIDTH = 460
LINE_HEIGHT = 15
PADDING = 8
GAP = 26  # between boxes: room for an arrow
LEFT = 20
ARC_STEP = 14  # how much further right each further-reaching arc swings
MAX_TEXT = 70  # characters of a line in a box (the title holds the rest)
PRECISION_COLORS = {"fp32": "#dbe9f6", "tf32": "#d9f0e3", "fp16": "#fde8c8", "bf16": "#f6dcef", "int8": "#f9d6d5"}
IO_COLOR = "#eeeeee"


def _shape(plan_specs: dict, name: str) -> str:
    spec = plan_specs.get(name)
    if spec is None:
        return name
    dims = "x".join("?" if d < 0 else str(d) for d in spec.shape) or "scalar"
    return f"{dims} {spec.dtype.value}"


def _lines(step, index: int, plan: Plan, specs: dict) -> list[str]:
    lines = [f"#{index} {step.name}", f"{step.kind} | {step.precision or plan.precision}", f"tactic: {step.tactic}"]
    lines += [f"-> {name}: {_shape(specs, name)}" for name in step.outputs]
    if step.fused_from and tuple(step.fused_from) != (step.name,):
        lines.append(f"fused: {' + '.join(step.fused_from)}")
    return lines


def _text(x: int, y: int, line: str, bold: bool = False) -> str:
    shown = line if len(line) <= MAX_TEXT else line[:MAX_TEXT - 3] + "..."
    weight = ' font-weight="bold"' if bold else ""
    return f'<text x="{x}" y="{y}"{weight}>{escape(shown)}</text>'


def _box(group_id: str, css: str, x: int, y: int, lines: list[str], fill: str) -> tuple[str, int]:
    """An SVG group for one box and its height."""
    height = 2 * PADDING + LINE_HEIGHT * len(lines)
    parts = [f'<g class="{css}" id="{escape(group_id)}">', f"<title>{escape(chr(10).join(lines))}</title>",
             f'<rect x="{x}" y="{y}" width="{BOX_WIDTH}" height="{height}" rx="6" fill="{fill}" stroke="#555"/>']
    for number, line in enumerate(lines):
        parts.append(_text(x + PADDING, y + PADDING + LINE_HEIGHT * (number + 1) - 3, line, bold=number == 0))
    parts.append("</g>")
    return "".join(parts), height


def _arrow(top: tuple[int, int], bottom: tuple[int, int], reach: int) -> str:
    (x0, y0), (x1, y1) = top, bottom
    if reach <= 1:
        return f'<path class="edge" d="M{x0},{y0} L{x1},{y1}" marker-end="url(#arrow)"/>'
    swing = LEFT + BOX_WIDTH + ARC_STEP * min(reach, 40)
    right = LEFT + BOX_WIDTH
    return (f'<path class="edge" d="M{right},{y0 - 8} C{swing},{y0 - 8} {swing},{y1 + 8} {right},{y1 + 8}" '
            'fill="none" marker-end="url(#arrow)"/>')


def engine_svg(plan: Plan) -> str:
    """The SVG text of the plan's picture."""
    specs = {spec.name: spec for spec in (*plan.inputs, *plan.weights, *plan.tensors, *plan.outputs)}
    weights = {spec.name for spec in plan.weights}
    body, y = [], 20
    rows: dict[str, tuple[int, int, int]] = {}  # box id -> (row, top y, bottom y)
    writer: dict[str, str] = {}  # tensor name -> the box id that writes it
    for spec in plan.inputs:
        group, height = _box(f"input-{spec.name}", "input", LEFT, y, [f"input {spec.name}", _shape(specs, spec.name)],
                             IO_COLOR)
        rows[f"input-{spec.name}"] = (len(rows), y, y + height)
        writer[spec.name] = f"input-{spec.name}"
        body.append(group)
        y += height + GAP
    edges = []
    for index, step in enumerate(plan.steps):
        box_id = f"step-{index}"
        fill = PRECISION_COLORS.get(step.precision or plan.precision, IO_COLOR)
        group, height = _box(box_id, "step", LEFT, y, _lines(step, index, plan, specs), fill)
        rows[box_id] = (len(rows), y, y + height)
        for name in dict.fromkeys(n for n in step.inputs if n is not None and n not in weights):
            if name in writer:
                edges.append((writer[name], box_id))
        writer.update((name, box_id) for name in step.outputs)
        body.append(group)
        y += height + GAP
    for spec in plan.outputs:
        box_id = f"output-{spec.name}"
        group, height = _box(box_id, "output", LEFT, y, [f"output {spec.name}", _shape(specs, spec.name)], IO_COLOR)
        rows[box_id] = (len(rows), y, y + height)
        if spec.name in writer:
            edges.append((writer[spec.name], box_id))
        body.append(group)
        y += height + GAP
    center = LEFT + BOX_WIDTH // 2
    for source, target in edges:
        (row0, _, bottom0), (row1, top1, _) = rows[source], rows[target]
        body.append(_arrow((center, bottom0), (center, top1), row1 - row0))
    farthest = max((rows[t][0] - rows[s][0] for s, t in edges), default=0)
    width = LEFT + BOX_WIDTH + ARC_STEP * min(farthest, 40) + 40
    title = f"{plan.network_name}: {len(plan.steps)} steps, {plan.target}, {plan.precision}"
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}" '
        'font-family="monospace" font-size="11">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        '<style>.edge { stroke: #555; stroke-width: 1.2; fill: none; }</style>',
        *body, "</svg>", ""])
