"""Engine files as an attacker writes them: plans edited and re-sealed (the checksum recomputed exactly as the
writer does, so only validation stands between the edit and execution), safetensors headers edited, raw bytes
cut and flipped. Each case is then loaded, given a context, fed random inputs of its declared specs and run.

The plan mutations aim where the plan is trusted: tactic ids (other targets, other kinds, malformed ids), layer
kinds, dtypes and shapes of tensor specs, step wiring (inputs and outputs swapped, dropped, renamed), layer
attributes (strides, pads, groups, axes, permutations, ...), the programs of generated pointwise kernels, the
memory plan, and the order and number of steps.
"""
from __future__ import annotations

import json
import struct

from ..case import Case
from ..choices import Choices
from ..execution import CaseRun, run_engine
from ..json_mutator import JsonMutator, dumps, get_at, node_paths, strings_of
from ..seeds import SeedBundle
from . import fuzz_target

OPERANDS = ("in0", "in1", "in2", "in9", "t0", "t1", "t5", "t99", "out", "0", "-1", "1e308", "nan", "inf", "0x10",
            "__import__", "os", "in0.real", "t0[0]")


# ---- the container ---------------------------------------------------------------------------------------------
def split_container(blob: bytes) -> tuple[dict, bytes]:
    """The safetensors header (as a dict) and the data region of a well-formed engine file."""
    (header_len,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + header_len]), blob[8 + header_len:]


def join_container(header: dict | str, data: bytes) -> bytes:
    """An engine file from a header (a dict, or JSON text) and data, the header padded to 8 bytes as
    safetensors writes it."""
    text = header if isinstance(header, str) else dumps(header)
    encoded = text.encode("utf-8", "surrogatepass")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data


def plan_of(blob: bytes) -> dict:
    return json.loads(split_container(blob)[0]["__metadata__"]["plan"])


def reseal(blob: bytes, plan_json: str) -> bytes:
    """`blob` with its plan replaced by `plan_json` and the checksum recomputed by the writer's own function,
    so that the reader accepts the file as intact and only its validation of the plan can refuse it."""
    from ...plan.file_format import _checksum

    header, data = split_container(blob)
    metadata = header["__metadata__"]
    metadata["plan"] = plan_json
    try:
        metadata["checksum"] = _checksum(plan_json, data)
    except UnicodeEncodeError:  # a lone surrogate in the plan: the reader cannot encode it either
        metadata["checksum"] = "0" * 64
    return join_container(header, data)


# ---- plan mutations ----------------------------------------------------------------------------------------------
class PlanMutator:
    """Mutations of a plan (a dict from the engine's JSON), aimed at the fields an engine trusts."""

    def __init__(self, choices: Choices, plan: dict, vocabulary: dict[str, tuple[str, ...]]):
        self.choices, self.plan, self.vocabulary = choices, plan, vocabulary
        self.names = sorted({t["name"] for key in ("inputs", "outputs", "tensors", "weights")
                             for t in plan.get(key, []) if isinstance(t, dict) and isinstance(t.get("name"), str)})
        self.generic = JsonMutator(choices, strings_of(plan) + list(vocabulary["tactics"][::7]))

    def mutate(self) -> str:
        focused = [(4, self.tactic), (2, self.kind), (3, self.spec_dtype), (5, self.spec_shape), (5, self.wiring),
                   (8, self.attribute), (3, self.program), (2, self.steps), (1, self.memory), (1, self.top_level)]
        if not isinstance(self.plan, dict) or self.choices.integer(0, 3) == 0:
            return self.anywhere()
        return self.choices.weighted(focused)()

    def anywhere(self) -> str:
        self.plan, description = self.generic.mutate(self.plan, node_paths(self.plan))
        return description

    def _steps(self) -> list:
        steps = self.plan.get("steps")
        return steps if isinstance(steps, list) and steps else []

    def _step(self) -> dict | None:
        steps = [s for s in self._steps() if isinstance(s, dict)]
        return self.choices.choice(steps) if steps else None

    def _generic_under(self, path: tuple) -> str:
        try:
            node = get_at(self.plan, path)
        except (KeyError, IndexError, TypeError):
            return self.anywhere()
        paths = [(*path, *p) for p in node_paths(node)]
        self.plan, description = self.generic.mutate(self.plan, paths)
        return description

    def tactic(self) -> str:
        step = self._step()
        if step is None:
            return self.anywhere()
        old = str(step.get("tactic"))
        kind = old.split(".")[1] if old.count(".") >= 2 else "x"
        same_kind = [t for t in self.vocabulary["tactics"] if t.split(".")[1] == kind]
        odd = ("cpu", "cpu.conv", "cpu..torch", "a.b.c.d", ".", "cuda.fused_pointwise.triton_generated_b1024_w4",
               "cpu.fused_pointwise.triton_generated_b1024_w4", f"cuda.{kind}.torch", f"tpu.{kind}.torch",
               old.replace("torch", "TORCH"), old + ".x", "cpu.plugin.torch")
        step["tactic"] = self.choices.choice((self.choices.choice(same_kind or odd),
                                              self.choices.choice(self.vocabulary["tactics"]),
                                              self.choices.choice(odd)))
        return f"step {step.get('name')!r}: tactic {old} -> {step['tactic']}"

    def kind(self) -> str:
        step = self._step()
        if step is None or not isinstance(step.get("op"), dict):
            return self.anywhere()
        old, step["op"]["kind"] = step["op"].get("kind"), self.choices.choice(self.vocabulary["kinds"])
        return f"step {step.get('name')!r}: kind {old} -> {step['op']['kind']}"

    def _spec(self) -> dict | None:
        key = self.choices.choice(("inputs", "outputs", "tensors", "weights"))
        listed = self.plan.get(key)  # an earlier mutation may have made it anything
        specs = [s for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
        return self.choices.choice(specs) if specs else None

    def spec_dtype(self) -> str:
        spec = self._spec()
        if spec is None:
            return self.anywhere()
        old, spec["dtype"] = spec.get("dtype"), self.choices.choice(self.vocabulary["dtypes"])
        return f"spec {spec.get('name')!r}: dtype {old} -> {spec['dtype']}"

    def spec_shape(self) -> str:
        spec = self._spec()
        if spec is None or not isinstance(spec.get("shape"), list):
            return self.anywhere()
        shape, old = spec["shape"], list(spec["shape"])
        edit = self.choices.choice(("dim", "dim", "drop", "add", "reverse", "swap_with_other"))
        if edit == "dim" and shape:
            i = self.choices.integer(0, len(shape) - 1)
            shape[i] = self.choices.interesting_int(near=shape[i])
        elif edit == "drop" and shape:
            del shape[self.choices.integer(0, len(shape) - 1)]
        elif edit == "add":
            shape.insert(self.choices.integer(0, len(shape)), self.choices.choice((1, 2, 0, -1)))
        elif edit == "swap_with_other":
            other = self._spec()
            if other is not None and isinstance(other.get("shape"), list):
                spec["shape"] = list(other["shape"])
        else:
            shape.reverse()
        return f"spec {spec.get('name')!r}: shape {old} -> {spec['shape']}"

    def wiring(self) -> str:
        step = self._step()
        if step is None:
            return self.anywhere()
        key = self.choices.choice(("inputs", "outputs"))
        wires = step.get(key)
        if not isinstance(wires, list):
            return self.anywhere()
        old = list(wires)
        edit = self.choices.choice(("rename", "rename", "null", "drop", "duplicate", "swap_in_out", "unknown"))
        if edit == "swap_in_out":
            step["inputs"], step["outputs"] = step.get("outputs"), step.get("inputs")
        elif edit == "drop" and wires:
            del wires[self.choices.integer(0, len(wires) - 1)]
        elif edit == "duplicate" and wires:
            wires.append(self.choices.choice(wires))
        elif wires:
            i = self.choices.integer(0, len(wires) - 1)
            wires[i] = {"rename": self.choices.choice(self.names or ["x"]), "null": None}.get(edit, "nowhere")
        return f"step {step.get('name')!r}: {key} {old} -> {step.get(key)} ({edit})"

    def attribute(self) -> str:
        step = self._step()
        attrs = step.get("op", {}).get("attrs") if step and isinstance(step.get("op"), dict) else None
        if not isinstance(attrs, dict) or not attrs:
            return self.anywhere()
        key = self.choices.choice(sorted(attrs))
        old, value = attrs[key], attrs[key]
        if isinstance(value, list) and value and self.choices.boolean():
            i = self.choices.integer(0, len(value) - 1)
            item = value[i]
            value[i] = self.choices.interesting_int(near=item)
        elif isinstance(value, bool):
            attrs[key] = not value if self.choices.boolean() else self.choices.interesting_int()
        elif isinstance(value, (int, float)):
            attrs[key] = self.choices.interesting_int(near=value) if self.choices.boolean() else \
                self.choices.interesting_float()
        elif isinstance(value, str) or value is None:
            attrs[key] = self.choices.choice(self.vocabulary["enums"] + ("", "x", None))
        else:
            return self._generic_under(("steps", self._steps().index(step), "op", "attrs", key))
        return f"step {step.get('name')!r}: {key} {json.dumps(old)[:60]} -> {json.dumps(attrs[key])[:60]}"

    def program(self) -> str:
        programs = [s["op"]["attrs"]["program"] for s in self._steps() if isinstance(s, dict)
                    and isinstance(s.get("op"), dict) and isinstance(s["op"].get("attrs"), dict)
                    and isinstance(s["op"]["attrs"].get("program"), list) and s["op"]["attrs"]["program"]]
        if not programs:
            return self.tactic()
        program = self.choices.choice(programs)
        i = self.choices.integer(0, len(program) - 1)
        line = program[i] if isinstance(program[i], str) else ""
        tokens = line.split()
        edit = self.choices.choice(("opcode", "operand", "drop_token", "add_token", "newline", "swap_lines",
                                    "drop_line", "raw"))
        if edit == "opcode" and len(tokens) > 2:
            tokens[2] = self.choices.choice(self.vocabulary["enums"] + ("import", "exec", "eval", "", "=", "out"))
        elif edit == "operand" and tokens:
            tokens[self.choices.integer(0, len(tokens) - 1)] = self.choices.choice(OPERANDS)
        elif edit == "drop_token" and tokens:
            del tokens[self.choices.integer(0, len(tokens) - 1)]
        elif edit == "add_token":
            tokens.insert(self.choices.integer(0, len(tokens)), self.choices.choice(OPERANDS))
        elif edit == "newline":
            tokens.append("\nimport this")
        elif edit == "swap_lines":
            j = self.choices.integer(0, len(program) - 1)
            program[i], program[j] = program[j], program[i]
            return f"program: swap lines {i} and {j}"
        elif edit == "drop_line":
            del program[i]
            return f"program: drop line {i}"
        else:
            tokens = [self.choices.text(list(OPERANDS))]
        program[i] = " ".join(tokens)
        return f"program[{i}]: {line!r} -> {program[i]!r}"

    def steps(self) -> str:
        if not isinstance(self.plan.get("steps"), list):
            return self.anywhere()
        if self.choices.boolean():
            return self._generic_under(("steps",))
        self.plan, description = self.generic.list_edit(self.plan, ("steps",))  # drop, duplicate, reorder steps
        return description

    def memory(self) -> str:
        return self._generic_under(("memory",)) if isinstance(self.plan.get("memory"), dict) else self.anywhere()

    def top_level(self) -> str:
        key = self.choices.choice(("target", "precision", "network_name", "build_info", "compute_capability"))
        pools = {"target": "targets", "precision": "precisions"}
        if key in pools and self.choices.boolean():
            old, self.plan[key] = self.plan.get(key), self.choices.choice(self.vocabulary[pools[key]])
            return f"{key}: {old!r} -> {self.plan[key]!r}"
        return self._generic_under((key,)) if key in self.plan else self.anywhere()


# ---- header and byte mutations -----------------------------------------------------------------------------------
def mutate_header(choices: Choices, blob: bytes) -> tuple[bytes, str]:
    """Edits of the safetensors header outside the plan (which the checksum does not cover)."""
    header, data = split_container(blob)
    entries = sorted(k for k in header if k != "__metadata__")
    edit = choices.choice(("metadata_value", "metadata_type", "metadata_drop", "version", "entry", "entry_field",
                           "generic"))
    metadata = header["__metadata__"]
    if edit == "metadata_value":
        metadata[choices.text(["extra", "format", "plan"])] = choices.choice((5, None, [], {"a": "b"}, 1.5, "x"))
    elif edit == "metadata_type":
        header["__metadata__"] = choices.choice(([], None, 5, "plan", [metadata]))
    elif edit == "metadata_drop":
        metadata.pop(choices.choice(sorted(metadata)), None)
    elif edit == "version":
        metadata["format_version"] = choices.choice(("0", "2", "1.0", " 1", "", 1, None))
    elif edit == "entry" and entries:
        name = choices.choice(entries)
        header[choices.choice((name + "x", entries[0], "__metadata__x", ""))] = header.pop(name)
    elif edit == "entry_field" and entries:
        entry = header[choices.choice(entries)]
        field = choices.choice(("dtype", "shape", "data_offsets"))
        entry[field] = choices.choice((["F16"], "F16", "I64", "BOOL", "X", [0, 2**64], [2**63, 0], [-1, 4], [1],
                                       [0, len(data) + 8], [], None, [choices.interesting_int()] * 2))
    else:
        mutator = JsonMutator(choices, strings_of({k: v for k, v in header.items() if k != "__metadata__"}))
        header, description = mutator.mutate(header, [p for p in node_paths(header) if p[:2] != ("__metadata__",
                                                                                             "plan")])
        return join_container(header, data), f"header: {description}"
    return join_container(header, data), f"header: {edit}"


def mutate_bytes(choices: Choices, blob: bytes) -> tuple[bytes, str]:
    (header_len,) = struct.unpack("<Q", blob[:8])
    edit = choices.choice(("truncate", "flip", "flip", "length", "nested_header", "insert", "delete", "append"))
    position = choices.integer(0, len(blob) - 1)
    if edit == "truncate":
        position = choices.choice((position, choices.integer(0, 8 + header_len), len(blob) - 1, 8))
        return blob[:position], f"truncated to {position} bytes"
    if edit == "flip":
        data = bytearray(blob)
        for _ in range(choices.integer(1, 8)):
            at = choices.choice((choices.integer(0, len(data) - 1), choices.integer(8, 8 + header_len - 1)))
            data[at] ^= 1 << choices.integer(0, 7)
        return bytes(data), "bits flipped"
    if edit == "length":
        length = choices.choice((0, 1, 2, header_len - 1, header_len + 1, header_len + 8, len(blob), 2**63, 2**64 - 1,
                                 100_000_001))
        return struct.pack("<Q", length) + blob[8:], f"header length {header_len} -> {length}"
    if edit == "nested_header":
        depth = choices.choice((1000, 20_000, 200_000))
        opener = choices.choice(("[", '{"a":'))
        return join_container(opener * depth, b""), f"header of {depth} nested {opener!r}"
    if edit == "insert":
        return blob[:position] + choices.blob(16) + blob[position:], f"bytes inserted at {position}"
    if edit == "delete":
        return blob[:position] + blob[position + choices.integer(1, 16):], f"bytes deleted at {position}"
    return blob + choices.blob(64), "bytes appended"


# ---- the target ------------------------------------------------------------------------------------------------
def mutate_engine(choices: Choices, bundle: SeedBundle) -> Case:
    seed = choices.choice(sorted(bundle.engines))
    blob = bundle.engines[seed]
    layer = choices.weighted([(16, "plan"), (3, "header"), (2, "bytes")])
    if layer == "plan":
        mutator = PlanMutator(choices, plan_of(blob), bundle.vocabulary)
        descriptions = [mutator.mutate() for _ in range(choices.weighted([(6, 1), (3, 2), (1, 3)]))]
        blob = reseal(blob, dumps(mutator.plan))
    elif layer == "header":
        blob, description = mutate_header(choices, blob)
        descriptions = [description]
    else:
        blob, description = mutate_bytes(choices, blob)
        descriptions = [description]
    info = {"seed": seed, "mutations": descriptions, "input_seed": choices.integer(0, 2**31),
            "arena": choices.integer(0, 3) == 0, "torch_inputs": choices.integer(0, 3) == 0}
    return Case("engine", (blob,), info)


@fuzz_target("engine", "re-sealed engine plans, safetensors headers and raw bytes; load, execute", mutate_engine)
def run_engine_case(case: Case, run: CaseRun) -> None:
    from ...runtime import Runtime

    run.stage = "load"
    engine = Runtime().deserialize(case.parts[0])
    run_engine(engine, run, case.info.get("input_seed", 0), case.info.get("arena", False),
               case.info.get("torch_inputs", False))
