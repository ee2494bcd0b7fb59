"""INT8 activations between integer layers, as TensorRT keeps INT8 tensors between its INT8 layers.

An INT8 build quantizes each convolution's and GEMM's input with a quantize-dequantize step (a fused pointwise
program, passes/quantize_int8.py) and the tactic timer then picks an integer or a float kernel per layer. Where a
quantized layer P on an integer kernel feeds nothing but such a step, and every reader of the step is a quantized
layer on an integer kernel at the step's scale, the step goes: P stores its result as INT8 at that scale
(int8_output_scale: its epilogue rounds and clips, exactly what the step computed) and the readers take the INT8
tensor as their input. Per element that is one byte written and one read, where the float path wrote two bytes,
read and wrote them again in the step, and read two:

    P (integer) -> y -> quantize-dequantize(s) -> y_q -> C1, C2 (integer, input scale s)
        =>  P (integer, int8_output_scale s) -> y (INT8) -> C1, C2

Where the producer cannot store INT8 (a float kernel, a layer of another kind, a network input, or a tensor that
others read too: a residual) but every reader of the step still runs an integer kernel, the step goes all the same
and the readers read y itself: integer kernels quantize their float input as they load it (kernels/cuda/int8.py),
which saves the step's pass over the tensor (ResNet-50's block inputs: about 1 ms of 256 images' run on an H200).

    Q (any) -> y -> quantize-dequantize(s) -> y_q -> C1, C2 (integer)    =>    Q -> y -> C1, C2

Run by the builder after the tactics are chosen (the choice between integer and float kernels is the timer's) and
before the memory plan; which tactics are integer is the caller's knowledge (kernels/cuda/int8.py). A reader of y
may now read it after a step that was to store over it as its residual: the caller works out again which steps may
store over their residual (plan/in_place.py).
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Callable, Sequence

from ..ir import ops
from ..ir.dtypes import DataType
from .plan import Step, TensorSpec

# the quantize-dequantize step quantize_int8 writes (INT8, zero point 0), as fuse_pointwise makes it one program:
# x / s -> round -> clip(-128, 127) -> * s, the scale being the program's second input
FAKE_QUANTIZE_PROGRAM = ("t0 = div in0 in1", "t1 = round t0", "t2 = clip t1 -128.0 127.0", "t3 = prod t2 in1",
                         "out = t3")
_LINKED_KINDS = (ops.FusedConvolution.KIND, ops.FusedMatMul.KIND)
SCALE_TOLERANCE = 1e-3  # the step's scale constant is stored in the compute dtype (FP16: 2^-11 relative)


@dataclasses.dataclass(frozen=True)
class Link:
    producer: str  # the step that now stores INT8 ("" where it stays float: the readers quantize on load)
    tensor: str  # its output, now INT8 (or float, read by the readers as it is)
    removed: str  # the quantize-dequantize step that went
    readers: tuple[str, ...]
    float_readers: bool = False  # the readers chose float kernels and compute unquantized (unquantize_float_readers)

    @property
    def int8(self) -> bool:
        return bool(self.producer)


def link_integer_layers(steps: Sequence[Step], tensors: Sequence[TensorSpec], outside: set[str],
                        is_integer: Callable[[str], bool], scalar: Callable[[str], float | None],
                        float_fallback: bool = False) -> tuple[list[Step], list[TensorSpec], list[Link]]:
    """The steps and activation specs with every link made (see the module's docstring), and the links.
    `is_integer(tactic id)`: whether the tactic is an integer kernel (those read INT8 inputs and honour
    int8_output_scale); `scalar(name)`: the value of a one-element constant, None where `name` is none.
    `float_fallback` (calibrated builds): quantize steps whose readers all chose float kernels go too, and those
    readers become plain float layers (see unquantize_float_readers)."""
    producer = {name: index for index, step in enumerate(steps) for name in step.outputs}
    readers: dict[str, list[int]] = defaultdict(list)
    for index, step in enumerate(steps):
        for name in set(step.inputs) - {None}:
            readers[name].append(index)
    new_steps, links = list(steps), []
    for index, step in enumerate(steps):
        found = _quantize_step(index, steps, readers, outside, is_integer, scalar)
        if found is None:
            if float_fallback and _float_readers_only(index, steps, readers, outside, is_integer):
                unquantize_float_readers(index, steps, readers, new_steps)
                names = tuple(steps[r].name for r in readers[step.outputs[0]])
                links.append(Link("", step.inputs[0], step.name, names, float_readers=True))
            continue
        source = _int8_producer(index, steps, producer, readers, outside, is_integer)
        if source is not None:
            linked = new_steps[source]  # (its input may have been relinked already: it can read an earlier link)
            new_steps[source] = dataclasses.replace(linked, op=dataclasses.replace(linked.op,
                                                                                  int8_output_scale=found))
        x, y = step.inputs[0], step.outputs[0]
        for reader in readers[y]:
            new_steps[reader] = dataclasses.replace(new_steps[reader], inputs=(x, *new_steps[reader].inputs[1:]))
        new_steps[index] = None
        links.append(Link("" if source is None else steps[source].name, x, step.name,
                          tuple(steps[r].name for r in readers[y])))
    int8 = {link.tensor for link in links if link.int8}
    removed = {name for index, step in enumerate(steps) if new_steps[index] is None for name in step.outputs}
    new_tensors = [dataclasses.replace(spec, dtype=DataType.INT8) if spec.name in int8 else spec
                   for spec in tensors if spec.name not in removed]
    return [step for step in new_steps if step is not None], new_tensors, links


def _quantize_step(index: int, steps: Sequence[Step], readers: dict[str, list[int]], outside: set[str],
                   is_integer: Callable[[str], bool], scalar: Callable[[str], float | None]) -> float | None:
    """The scale, where step `index` is a quantize-dequantize step whose readers all run integer kernels at its
    scale (so that it can go)."""
    step = steps[index]
    if not _is_fake_quantize(step):
        return None
    (x, scale_name), y = step.inputs, step.outputs[0]
    if x is None or scale_name is None or y in outside or not readers[y]:
        return None
    chosen = [steps[r] for r in readers[y]]
    if not all(_integer_layer(reader, is_integer) and reader.inputs[0] == y and y not in reader.inputs[1:]
               for reader in chosen):
        return None
    scales, stored = {reader.op.int8_input_scale for reader in chosen}, scalar(scale_name)
    if len(scales) != 1 or stored is None:
        return None
    (scale,) = scales
    return scale if math.isclose(stored, scale, rel_tol=SCALE_TOLERANCE) else None


def _float_readers_only(index: int, steps: Sequence[Step], readers: dict[str, list[int]], outside: set[str],
                        is_integer: Callable[[str], bool]) -> bool:
    """Whether step `index` is a quantize-dequantize step read only by quantized layers that chose float kernels."""
    step = steps[index]
    if not _is_fake_quantize(step) or step.inputs[0] is None or step.outputs[0] in outside:
        return False
    y = step.outputs[0]
    return bool(readers[y]) and all(
        reader.kind in _LINKED_KINDS and reader.op.int8_input_scale and not is_integer(reader.tactic)
        and reader.inputs[0] == y and y not in reader.inputs[1:] for reader in (steps[r] for r in readers[y]))


def unquantize_float_readers(index: int, steps: Sequence[Step], readers: dict[str, list[int]],
                             new_steps: list) -> None:
    """TensorRT's mixed precision for calibrated builds: the calibrated scales allow INT8, they do not force it. A
    quantized layer whose float kernel was faster than its integer ones computes as a plain float layer: it reads
    the unquantized tensor (the quantize step goes) and loses its INT8 operands (its weights stay the per-channel
    INT8 values times their scales, which is within the INT8 rounding of the originals). Without this, every such
    layer paid a pass of the quantize step over its input for nothing: 6.7 of 13.1 ms of ResNet-50 at batch 256."""
    x, y = steps[index].inputs[0], steps[index].outputs[0]
    for reader in readers[y]:
        step = new_steps[reader]
        op = dataclasses.replace(step.op, int8_input_scale=0.0)
        new_steps[reader] = dataclasses.replace(step, op=op, inputs=(x, *step.inputs[1:5]))
    new_steps[index] = None


def _is_fake_quantize(step: Step) -> bool:
    return (step.kind == ops.FusedPointwise.KIND and tuple(step.op.program) == FAKE_QUANTIZE_PROGRAM
            and len(step.inputs) == 2 and len(step.outputs) == 1)


def _int8_producer(index: int, steps: Sequence[Step], producer: dict[str, int], readers: dict[str, list[int]],
                   outside: set[str], is_integer: Callable[[str], bool]) -> int | None:
    """The index of the producer of quantize step `index`'s input where it can store that input as INT8: an integer
    layer whose output nothing else reads (nor the network)."""
    x = steps[index].inputs[0]
    if x in outside or x not in producer or readers[x] != [index]:
        return None
    source = steps[producer[x]]
    if len(source.outputs) != 1 or not _integer_layer(source, is_integer) or source.op.int8_output_scale:
        return None
    return producer[x]


def _integer_layer(step: Step, is_integer: Callable[[str], bool]) -> bool:
    return step.kind in _LINKED_KINDS and bool(step.op.int8_input_scale) and is_integer(step.tactic)


# ---- before the tactics are chosen: the links the timer assumes ------------------------------------------------
def expected_links(network) -> tuple[set[str], set[str]]:
    """(the quantized layers whose input would be INT8, those that would store INT8) were every quantized layer of
    the network (an IR Network after quantize_int8 and fuse_pointwise) to choose an integer kernel. The builder
    times their integer tactics that way (an integer kernel reading INT8 does no quantizing in its main loop), since
    links are made only once tactics are chosen."""
    consumers, outputs = network.consumers(), {id(t) for t in network.outputs}
    int8_inputs, int8_outputs = set(), set()
    for layer in network.layers:
        if layer.kind != ops.FusedPointwise.KIND or tuple(layer.op.program) != FAKE_QUANTIZE_PROGRAM \
                or len(layer.inputs) != 2 or len(layer.outputs) != 1:
            continue
        x, y = layer.inputs[0], layer.outputs[0]
        readers, producer = consumers.get(id(y), []), x.producer if x is not None else None
        if id(y) in outputs or not readers or not all(_quantized_reader(reader, y) for reader in readers):
            continue
        if producer is None or id(x) in outputs or consumers.get(id(x), []) != [layer] \
                or producer.kind not in _LINKED_KINDS or not getattr(producer.op, "int8_input_scale", 0.0):
            continue
        int8_outputs.add(producer.name)
        int8_inputs.update(reader.name for reader in readers)
    return int8_inputs, int8_outputs


def _quantized_reader(layer, tensor) -> bool:
    return (layer.kind in _LINKED_KINDS and bool(getattr(layer.op, "int8_input_scale", 0.0))
            and layer.inputs[0] is tensor and sum(t is tensor for t in layer.inputs) == 1)


def as_linked(layer, int8_input: bool, int8_output: bool):
    """A copy of IR `layer` as a link would run it: its input INT8, its output stored INT8 (at a placeholder scale:
    the timer only times it)."""
    from ..ir.graph import Tensor

    inputs = list(layer.inputs)
    if int8_input:
        x = inputs[0]
        inputs[0] = Tensor(x.name, DataType.INT8, x.shape, x.dim_names)
    op = dataclasses.replace(layer.op, int8_output_scale=1.0) if int8_output else layer.op
    return dataclasses.replace(layer, op=op, inputs=inputs)
