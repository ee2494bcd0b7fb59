"""Matching and editing helpers shared by the recognition and fusion passes.

A pattern is a small tree over tensors: `Op` (the layer kind that produces the tensor, attribute values, and
patterns for its inputs), `Var` (any tensor, captured by name: a second use of the name must be the same
tensor), `Const` (a constant tensor, optionally with every element equal to a value) and `AnyOf` (alternatives).
Matching backtracks over alternatives and over the operand orders of commutative operations, and yields every
way the pattern fits.

A `Rule` pairs a pattern with a function that builds the replacement layer; `apply_rules` applies a table of
rules to a network. A match is used only when every matched layer but the root feeds nothing outside the match
(and is no network output): nothing outside may lose a value it reads. The replacement takes over the root's
output tensor, so its consumers and its name (which may be a network output's) stay as they were.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..ir import ops
from ..ir.graph import Layer, Network, Tensor
from ..ir.infer import infer_layer
from ..ir.ops import ElementWiseOperation as E

RTOL = 1e-4  # constants written by exporters carry float32 rounding (1.4142135 for sqrt(2)) or short literals

_COMMUTATIVE = {E.SUM, E.PROD, E.MAX, E.MIN}


# ---- matches and patterns ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Match:
    """Captured tensors by name, and the matched layers (the root first, each once)."""
    tensors: Mapping[str, Tensor] = dataclasses.field(default_factory=dict)
    layers: tuple[Layer, ...] = ()

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def get(self, name: str) -> Tensor | None:
        return self.tensors.get(name)

    def layer(self, name: str) -> Layer:
        """The layer that produced the tensor captured as `name` (an `Op` capture)."""
        return self.tensors[name].producer

    def value(self, name: str, default: float = 1.0) -> float:
        """The (uniform) value of a captured scalar constant, or `default` where the capture is absent."""
        tensor = self.tensors.get(name)
        return default if tensor is None else float(tensor.value.reshape(-1)[0])

    def bind(self, name: str | None, tensor: Tensor) -> "Match | None":
        if name is None:
            return self
        bound = self.tensors.get(name)
        if bound is not None:
            return self if bound is tensor else None
        return dataclasses.replace(self, tensors={**self.tensors, name: tensor})

    def with_layer(self, layer: Layer) -> "Match":
        if any(layer is seen for seen in self.layers):
            return self
        return dataclasses.replace(self, layers=self.layers + (layer,))


class Pattern:
    def match(self, tensor: Tensor, found: Match) -> Iterator[Match]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Var(Pattern):
    """Any tensor; every use of one name must be the same tensor."""
    name: str

    def match(self, tensor, found):
        bound = found.bind(self.name, tensor)
        if bound is not None:
            yield bound


@dataclasses.dataclass(frozen=True)
class Const(Pattern):
    """A constant tensor: every element equal to `value` (None: any one value) when `uniform`."""
    value: float | None = None
    name: str | None = None
    uniform: bool = True  # False: any constant (weights)

    def match(self, tensor, found):
        if not tensor.is_constant or tensor.value.size == 0:
            return
        values = tensor.value
        if self.uniform:
            if values.dtype.kind not in "fiu" or not np.all(values == values.reshape(-1)[0]):
                return
            first = float(values.reshape(-1)[0])
            if self.value is not None and not np.isclose(first, self.value, rtol=RTOL, atol=0.0):
                return
        bound = found.bind(self.name, tensor)
        if bound is not None:
            yield bound


@dataclasses.dataclass(frozen=True)
class Op(Pattern):
    """A tensor produced by a single-output layer of `kind` whose attributes have the given values
    (a callable value is a predicate on the attribute) and whose inputs match `inputs`."""
    kind: str
    inputs: tuple[Pattern, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    commutative: bool = False
    name: str | None = None

    def match(self, tensor, found):
        layer = tensor.producer
        if layer is None or layer.kind != self.kind or len(layer.outputs) != 1 or layer.outputs[0] is not tensor:
            return
        if len(layer.inputs) != len(self.inputs) or any(t is None for t in layer.inputs):
            return
        for field, wanted in self.attrs:
            actual = getattr(layer.op, field)
            if not (wanted(actual) if callable(wanted) else actual == wanted):
                return
        found = found.bind(self.name, tensor)
        if found is None:
            return
        found = found.with_layer(layer)
        orders = [layer.inputs, layer.inputs[::-1]] if self.commutative else [layer.inputs]
        for operands in orders:
            yield from _match_all(self.inputs, operands, found)


@dataclasses.dataclass(frozen=True)
class AnyOf(Pattern):
    options: tuple[Pattern, ...]

    def match(self, tensor, found):
        for option in self.options:
            yield from option.match(tensor, found)


def _match_all(patterns: Sequence[Pattern], tensors: Sequence[Tensor], found: Match) -> Iterator[Match]:
    if not patterns:
        yield found
        return
    for partial in patterns[0].match(tensors[0], found):
        yield from _match_all(patterns[1:], tensors[1:], partial)


# ---- pattern constructors ---------------------------------------------------------------------------------
def any_of(*options: Pattern) -> AnyOf:
    return AnyOf(tuple(options))


def elementwise(operation: E, a: Pattern, b: Pattern, name: str | None = None) -> Op:
    return Op(ops.ElementWise.KIND, (a, b), (("operation", operation),), operation in _COMMUTATIVE, name)


def add(a, b, name=None):
    return elementwise(E.SUM, a, b, name)


def sub(a, b, name=None):
    return elementwise(E.SUB, a, b, name)


def mul(a, b, name=None):
    return elementwise(E.PROD, a, b, name)


def div(a, b, name=None):
    return elementwise(E.DIV, a, b, name)


def power(a, b, name=None):
    return elementwise(E.POW, a, b, name)


def unary(operation: ops.UnaryOperation, a: Pattern, name: str | None = None) -> Op:
    return Op(ops.Unary.KIND, (a,), (("operation", operation),), name=name)


def activation(type: ops.ActivationType, a: Pattern, name: str | None = None) -> Op:
    return Op(ops.Activation.KIND, (a,), (("type", type),), name=name)


def reduce_mean(a: Pattern, name: str | None = None) -> Op:
    return Op(ops.Reduce.KIND, (a,), (("operation", ops.ReduceOperation.MEAN), ("keep_dims", True)), name=name)


def product(a: Pattern, b: Pattern, c: Pattern) -> AnyOf:
    """a * b * c in every bracketing (each multiplication is commutative)."""
    return any_of(mul(mul(a, b), c), mul(mul(a, c), b), mul(mul(b, c), a))


def reciprocal(a: Pattern) -> AnyOf:
    """1 / a as exporters write it: Reciprocal(a) or Div(1, a)."""
    return any_of(unary(ops.UnaryOperation.RECIP, a), div(Const(1.0), a))


# ---- the network's uses -------------------------------------------------------------------------------------
class Uses:
    """Who reads each tensor, and which tensors are network outputs (rebuilt after each edit)."""

    def __init__(self, network: Network):
        self.network = network
        self._consumers = network.consumers()
        self._outputs = {id(t) for t in network.outputs}

    def consumers(self, tensor: Tensor) -> list[Layer]:
        return self._consumers.get(id(tensor), [])

    def is_output(self, tensor: Tensor) -> bool:
        return id(tensor) in self._outputs

    def only_feeds(self, layer: Layer, inside: Iterable[Layer]) -> bool:
        """Whether every output of `layer` is read only by layers in `inside` and is no network output."""
        allowed = {id(l) for l in inside}
        return all(not self.is_output(t) and all(id(c) in allowed for c in self.consumers(t))
                   for t in layer.outputs)

    def single_consumer(self, tensor: Tensor) -> Layer | None:
        """The one layer that reads `tensor` (once), if it is no network output."""
        readers = self.consumers(tensor)
        if len(readers) != 1 or self.is_output(tensor):
            return None
        return readers[0] if sum(t is tensor for t in readers[0].inputs) == 1 else None


# ---- editing ----------------------------------------------------------------------------------------------
def make_layer(network: Network, op: ops.OpAttrs, inputs: Sequence[Tensor | None], base: str,
               outputs: Sequence[Tensor] | None = None) -> Layer:
    """A new layer (not yet placed in `network.layers`). Given `outputs` are taken over, and must have the
    shapes and dtypes the layer produces; otherwise new output tensors are made."""
    name = network.unique_name(base)
    inferred = infer_layer(op, list(inputs), name)
    if outputs is None:
        outputs = []
        for index, info in enumerate(inferred):
            tensor_name = network.unique_name(f"{name}_output_{index}")
            outputs.append(Tensor(tensor_name, info.dtype, info.shape, value=info.value))
    elif [(t.shape, t.dtype) for t in outputs] != [(i.shape, i.dtype) for i in inferred]:
        raise AssertionError(f"replacement {name} ({op.KIND}) produces {[(i.shape, i.dtype) for i in inferred]}, "
                             f"not the {[(t.shape, t.dtype) for t in outputs]} it replaces")
    layer = Layer(name, op, list(inputs), list(outputs))
    for tensor in outputs:
        tensor.producer = layer
    return layer


def make_constant(network: Network, value: np.ndarray, base: str) -> Tensor:
    """A new weight tensor (constants need no layer once `fold_constants` has run)."""
    from ..ir.dtypes import DataType

    value = np.ascontiguousarray(value)
    return Tensor(network.unique_name(base), DataType.from_numpy(value.dtype), value.shape, value=value)


def bias_values(layer: Layer, channels: int) -> np.ndarray:
    """The constant bias of `layer` (input 2 of convolutions, GEMMs and norms) as one float64 value per channel;
    zeros where it has none."""
    bias = layer.inputs[2] if len(layer.inputs) > 2 else None
    if bias is None:
        return np.zeros(channels)
    return np.broadcast_to(bias.value.astype(np.float64).reshape(-1), (channels,)).copy()


def replace_bias(network: Network, layer: Layer, values: np.ndarray) -> None:
    """Give `layer` a new constant bias (input 2), in the dtype of its old one, or else of its weights (input 1)."""
    old = layer.inputs[2] if len(layer.inputs) > 2 else None
    dtype = old.value.dtype if old is not None else layer.inputs[1].value.dtype
    if len(layer.inputs) < 3:
        layer.inputs.append(None)
    layer.inputs[2] = make_constant(network, values.astype(dtype), f"{layer.name}_bias")


def splice(network: Network, remove: Iterable[Layer], insert: Sequence[Layer], before: Layer) -> None:
    """Remove layers and place `insert` where `before` stands (`before` may be one of the removed)."""
    dropped = {id(l) for l in remove}
    layers: list[Layer] = []
    for layer in network.layers:
        if layer is before:
            layers.extend(insert)
        if id(layer) not in dropped:
            layers.append(layer)
    network.layers = layers


def replace_uses(network: Network, old: Tensor, new: Tensor) -> None:
    """Every layer that read `old` reads `new` instead (network outputs are left alone)."""
    for layer in network.layers:
        layer.inputs = [new if t is old else t for t in layer.inputs]


# ---- helpers for normalizations --------------------------------------------------------------------------
def trailing_axes(reduce_layer: Layer, rank: int) -> int | None:
    """How many trailing dims `reduce_layer` reduces, if it reduces exactly the last k dims (k > 0)."""
    axes = sorted({a % rank for a in reduce_layer.op.axes}) if reduce_layer.op.axes else list(range(rank))
    if not axes or axes != list(range(rank - len(axes), rank)):
        return None
    return len(axes)


def per_feature(network: Network, tensor: Tensor | None, x: Tensor, k: int, default: float | None) -> Tensor | None:
    """A constant that multiplies or shifts x ([..., *normalized], the last `k` dims normalized) as one value per
    normalized element, with the normalized shape; None where it varies along other dims (or is absent and
    `default` is None). Where it already has that shape it is reused, so weights are not duplicated."""
    rank, dtype = len(x.shape), x.dtype.numpy
    normalized = x.shape[rank - k:]
    if tensor is None:
        return None if default is None else make_constant(network, np.full(normalized, default, dtype), "ones")
    value = tensor.value
    if value.ndim > rank:
        return None
    padded = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if any(d != 1 for d in padded.shape[:rank - k]):
        return None
    if value.shape == normalized and value.dtype == dtype:
        return tensor
    try:
        per = np.broadcast_to(padded.reshape(padded.shape[rank - k:]), normalized).astype(dtype)
    except ValueError:
        return None
    return make_constant(network, per, tensor.name)


# ---- rules ------------------------------------------------------------------------------------------------
class Rewrite:
    """What a rule's build function may do besides naming the replacement: add weights, add helper layers
    (placed before the replacement), and retire layers outside the match that only the match read."""

    def __init__(self, network: Network, root: Layer, match: Match, uses: Uses):
        self.network, self.root, self.match, self.uses = network, root, match, uses
        self.new_layers: list[Layer] = []
        self.retired: list[Layer] = []

    def constant(self, value: np.ndarray, base: str) -> Tensor:
        return make_constant(self.network, value, base)

    def layer(self, op: ops.OpAttrs, inputs: Sequence[Tensor | None], base: str) -> Tensor:
        layer = make_layer(self.network, op, inputs, base)
        self.new_layers.append(layer)
        return layer.outputs[0]

    def retire(self, layer: Layer) -> None:
        if self.uses.only_feeds(layer, self.match.layers):
            self.retired.append(layer)


Build = Callable[[Rewrite, Match], "tuple[ops.OpAttrs, list[Tensor | None]] | None"]


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str  # the rewrite counter
    pattern: Pattern
    build: Build  # (op, inputs) of the replacement, or None where the match does not qualify


def valid_matches(pattern: Pattern, root: Layer, uses: Uses) -> Iterator[Match]:
    """Matches rooted at `root` whose inner layers feed only the match, and whose elementwise layers keep the
    shape of a non-constant input (a constant operand never broadcasts the value to a larger shape)."""
    if len(root.outputs) != 1:
        return
    for found in pattern.match(root.outputs[0], Match()):
        inner = found.layers[1:]
        if all(uses.only_feeds(layer, found.layers) for layer in inner) and all(map(_keeps_shape, found.layers)):
            yield found


def _keeps_shape(layer: Layer) -> bool:
    if layer.kind != ops.ElementWise.KIND:
        return True
    return any(t.shape == layer.outputs[0].shape for t in layer.inputs if not t.is_constant)


def apply_rules(owner, network: Network, rules: Sequence[Rule]) -> bool:
    """Apply `rules` (the first that fits wins) at every layer, from the outputs back, so that the largest
    pattern is found before its parts; `owner` (a Pass) counts and logs the rewrites."""
    changed = False
    removed: set[int] = set()
    uses = Uses(network)
    for root in reversed(list(network.layers)):
        if id(root) in removed:
            continue
        for rule in rules:
            done = _rewrite_at(owner, network, rule, root, uses)
            if done is not None:
                removed.update(id(layer) for layer in done)
                uses = Uses(network)
                changed = True
                break
    return changed


def _rewrite_at(owner, network: Network, rule: Rule, root: Layer, uses: Uses) -> list[Layer] | None:
    for found in valid_matches(rule.pattern, root, uses):
        rewrite = Rewrite(network, root, found, uses)
        built = rule.build(rewrite, found)
        if built is None:
            continue
        op, inputs = built
        order = {id(l): i for i, l in enumerate(network.layers)}
        replaced = sorted((*found.layers, *rewrite.retired), key=lambda l: order[id(l)])
        first = min(found.layers, key=lambda l: order[id(l)])
        layer = make_layer(network, op, inputs, f"{first.name}.{rule.name}", outputs=root.outputs)
        layer.fused_from = tuple(l.name for l in replaced)
        splice(network, replaced, [*rewrite.new_layers, layer], before=root)
        owner.count(rule.name)
        owner.log.append(" + ".join(layer.fused_from) + f" -> {layer.name}")
        return replaced
    return None
