"""The builder's INT8 links on a GPU: tactic timing that knows about them, and making them (plan/integer_links.py).

Links (INT8 activations between layers on integer kernels) are made once every tactic is chosen, but whether an
integer kernel is fastest depends on them: linked, it reads INT8 and stores INT8, unlinked it quantizes its float
input in its main loop. So the layers a link is expected for (every quantized neighbour on an integer kernel) have
their integer tactics timed as linked; where an expected link then does not form (a neighbour chose a float kernel)
the layer is timed again as it will run. Like the builder, this module joins kernels (which tactics are integer)
and plans.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from .ir.graph import Layer, Network
from .kernels.registry import KernelEntry
from .plan import Step, TensorSpec
from .plan.in_place import residual_in_place_candidates
from .plan.integer_links import as_linked, expected_links, link_integer_layers
from .tactics.selection import tactic_id
from .tactics.timing import TacticTimer

SETTLE_ROUNDS = 3  # re-timing one layer can undo another link: a few rounds settle it


def _is_integer(tactic: str) -> bool:
    from .kernels import integer

    return integer.is_integer_tactic(tactic)


def integer_split(entries: list[KernelEntry]) -> tuple[list[KernelEntry], list[KernelEntry]]:
    """(the integer tactics among `entries`, the others)."""
    integer = [entry for entry in entries if _is_integer(tactic_id(entry))]
    return integer, [entry for entry in entries if entry not in integer]


def time_as_linked(timer: TacticTimer, layer: Layer, entries: list[KernelEntry], in_place: bool, int8_input: bool,
                   int8_output: bool) -> KernelEntry:
    """The fastest of `entries`, the integer ones timed as they run when linked (INT8 input, INT8 output), the
    others as usual."""
    integer, others = integer_split(entries)
    if not integer:
        return timer(layer, entries, in_place=in_place)
    linked = as_linked(layer, int8_input, int8_output)
    linked_in_place = in_place and not int8_output  # an INT8 output is never stored over a float residual
    best = timer(linked, integer, in_place=linked_in_place)
    if not others:
        return best
    best_other = timer(layer, others, in_place=in_place)
    faster = timer.milliseconds(linked, best, linked_in_place) < timer.milliseconds(layer, best_other, in_place)
    return best if faster else best_other


def scalar_of(weights: dict[str, torch.Tensor]) -> Callable[[str], float | None]:
    """name -> the value of a one-element weight, None where `name` is none."""
    def scalar(name: str) -> float | None:
        value = weights.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.numel() == 1 else None

    return scalar


class IntegerLinks:
    """One INT8 GPU build's links: `expected` (quantized layers whose input / output a link would make INT8, were
    every quantized layer on an integer kernel), what the timer does with them, and the links made at the end."""

    def __init__(self, graph: Network, timer: TacticTimer | None, may_store: set[str], say: Callable[..., None],
                 calibrated: bool = True):
        self.graph, self.timer, self.may_store, self.say = graph, timer, may_store, say
        self.calibrated = calibrated  # the scales came from calibration (not Q/DQ): float kernels compute unquantized
        self.expected = expected_links(graph)

    def _flags(self, layer: Layer) -> tuple[bool, bool]:
        return layer.name in self.expected[0], layer.name in self.expected[1]

    def timing_work(self, layer: Layer, found: list[KernelEntry]) -> list[tuple[Layer, list[KernelEntry], bool]]:
        """(layer, candidates, in_place) as the timer will meet them (for compile_ahead)."""
        in_place, (int8_input, int8_output) = layer.name in self.may_store, self._flags(layer)
        if not (int8_input or int8_output):
            return [(layer, found, in_place)]
        integer, others = integer_split(found)
        return [(layer, others, in_place),
                (as_linked(layer, int8_input, int8_output), integer, in_place and not int8_output)]

    def layer_timer(self, layer: Layer) -> Callable | None:
        """The timer for `layer`'s candidates where a link is expected for it (None: the plain timer)."""
        int8_input, int8_output = self._flags(layer)
        if self.timer is None or not (int8_input or int8_output):
            return None
        in_place = layer.name in self.may_store
        return lambda timed, entries: time_as_linked(self.timer, timed, entries, in_place, int8_input, int8_output)

    def settle(self, steps: list[Step], tensors: list[TensorSpec], candidates: list, weights: dict,
               outside: set[str]) -> None:
        """Where an expected link did not form, time the layer's candidates again as it will run and keep the
        fastest (in `steps`, in place)."""
        if self.timer is None or not (self.expected[0] or self.expected[1]):
            return
        for _ in range(SETTLE_ROUNDS):
            links = link_integer_layers(steps, tensors, outside, _is_integer, scalar_of(weights))[2]
            int8_inputs = {reader for link in links if link.int8 for reader in link.readers}
            int8_outputs = {link.producer for link in links if link.int8}
            changed = False
            for index, (layer, found) in enumerate(zip(self.graph.layers, candidates)):
                actual = (layer.name in int8_inputs, layer.name in int8_outputs)
                if len(found) < 2 or self._flags(layer) == actual or not _is_integer(steps[index].tactic):
                    continue
                best = tactic_id(time_as_linked(self.timer, layer, found, layer.name in self.may_store, *actual))
                if best != steps[index].tactic:
                    self.say(f"  {layer.name}: {steps[index].tactic} -> {best} (its INT8 link did not form)",
                             detail=True)
                    steps[index] = dataclasses.replace(steps[index], tactic=best)
                    changed = True
            if not changed:
                return

    def link(self, steps: list[Step], tensors: list[TensorSpec], weights: dict, outside: set[str],
             may_store: set[str]) -> tuple[list[Step], list[TensorSpec], set[str]]:
        """The steps and activation specs with the links made, and the steps that may still store over their
        residual (the links change tensors' readers and dtypes)."""
        steps, tensors, links = link_integer_layers(steps, tensors, outside, _is_integer, scalar_of(weights),
                                                    float_fallback=self.calibrated)
        if links:
            stored, unquantized = sum(link.int8 for link in links), sum(link.float_readers for link in links)
            self.say(f"int8: {len(links)} quantize steps removed: {stored} layers store INT8 activations for the "
                     f"integer layers reading them, {len(links) - stored - unquantized} tensors are quantized as "
                     f"they are read, {unquantized} are read unquantized by layers whose float kernels were faster")
        for link in links:
            how = (f"{link.producer} stores it INT8" if link.int8 else "read unquantized by float kernels"
                   if link.float_readers else "read as float, quantized on load")
            self.say(f"  {link.tensor!r} -> {', '.join(link.readers)}: {how}", detail=True)
        return steps, tensors, may_store & residual_in_place_candidates(steps, tensors, outside)
