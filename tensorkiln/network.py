"""NetworkDefinition: the public layer-by-layer API (in the spirit of TensorRT's INetworkDefinition).

Importers and users call it; it writes the IR (`tensorkiln.ir.Network`). Every `add_*` infers its
output shapes and dtypes at once, so `layer.get_output(0).shape` is known immediately. Weights may be
numpy arrays (turned into constant tensors) or tensors already in the network.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import ShapeError
from .ir import ops
from .ir.dtypes import DataType
from .ir.graph import Layer, Network, Tensor
from .ir.infer import infer_layer
from .ir.ops import (ActivationType, ElementWiseOperation, PaddingMode, PoolingType, ReduceOperation, ScaleMode,
                     UnaryOperation)
from .limits import ResourceLimits, format_bytes

WeightsLike = np.ndarray | Tensor | None


def _pair(value, rank: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    return tuple(int(v) for v in value)


class NetworkDefinition:
    """Builds a network layer by layer. `network.ir` is the graph handed to the builder.

    Every tensor must fit in `limits`' memory budget (inputs, constants, every layer's outputs: checked before a
    constant layer is evaluated), and so must the network's constants together: the importers and the layer API
    all pass through here, so a model file cannot make the process ask for more (a ResourceLimitError instead)."""

    def __init__(self, name: str = "network", limits: ResourceLimits | None = None):
        self.ir = Network(name)
        self.limits = limits or ResourceLimits()
        self.constant_bytes = 0  # what the network's constant values hold (weights and folded values)

    # ---- inputs, outputs, constants -----------------------------------------------------------
    def add_input(self, name: str, dtype: DataType, shape: Sequence[int],
                  dim_names: Sequence[str | None] | None = None) -> Tensor:
        if any(int(d) < 0 for d in shape):
            raise ShapeError(f"input {name!r} has an unresolved dimension in {tuple(shape)}: engines are built "
                             "for fixed shapes; give every dimension a size")
        self.limits.check_tensor(f"input {name!r}", shape, dtype)
        self.ir.claim_name(name)
        tensor = Tensor(name, dtype, tuple(shape), tuple(dim_names or ()))
        self.ir.inputs.append(tensor)
        return tensor

    def mark_output(self, tensor: Tensor) -> None:
        if tensor not in self.ir.outputs:
            self.ir.outputs.append(tensor)

    def add_constant(self, shape: Sequence[int] | None, weights: np.ndarray, name: str | None = None) -> Layer:
        self.limits.check_layer_count(len(self.ir.layers) + 1, f"constant {name or 'constant'!r}")
        value = np.asarray(weights)
        self.check_constant(f"constant {name or 'constant'!r}", value.shape, value.dtype)
        if shape is not None:
            value = value.reshape(tuple(shape))
        if value.dtype == np.float64 and name is None:
            value = value.astype(np.float32)
        tensor_name = self.ir.unique_name(name or "constant")
        out = Tensor(tensor_name, DataType.from_numpy(value.dtype), value.shape, value=value)
        self.constant_bytes += value.nbytes
        layer_name = self.ir.unique_name(f"const[{tensor_name}]")
        layer = Layer(layer_name, ops.Constant(), [], [out])
        out.producer = layer
        self.ir.layers.append(layer)
        return layer

    def check_constant(self, what: str, shape: Sequence[int], dtype) -> None:
        """Raise ResourceLimitError unless a constant of `shape` and `dtype` fits in the budget, alone and with the
        constants the network holds; importers call it before they allocate a constant's value."""
        nbytes = self.limits.check_tensor(what, shape, dtype)
        self.limits.check_total(f"the network's constants ({format_bytes(self.constant_bytes)}) with {what} "
                                f"({format_bytes(nbytes)})", self.constant_bytes + nbytes)

    def weights(self, value: WeightsLike, name: str) -> Tensor | None:
        """A tensor for weights given as an array (or already a tensor)."""
        if value is None or isinstance(value, Tensor):
            return value
        return self.add_constant(None, np.asarray(value, dtype=np.float32), name=name).get_output(0)

    # ---- the generic entry point --------------------------------------------------------------
    def add_layer(self, op: ops.OpAttrs, inputs: Sequence[Tensor | None], name: str | None = None,
                  output_names: Sequence[str] | None = None) -> Layer:
        """A layer of `op` on `inputs`. Its outputs take `output_names` (each claimed: no other tensor may hold
        it) or, by default, names made from the layer's that can never be a name the model reserved."""
        layer_name = self.ir.unique_layer_name(name or op.KIND)
        self.limits.check_layer_count(len(self.ir.layers) + 1, f"layer {layer_name!r} ({op.KIND})")
        inferred = infer_layer(op, list(inputs), layer_name, self.limits)
        for index, info in enumerate(inferred):
            if info.value is not None:  # folded already (each output fits alone: infer_layer checked that first)
                self.check_constant(f"output {index} of layer {layer_name!r} ({op.KIND})", info.shape, info.dtype)
                self.constant_bytes += info.value.nbytes
        if output_names is not None and len(output_names) != len(inferred):
            raise ShapeError(f"layer {layer_name!r} ({op.KIND}) has {len(inferred)} output(s); "
                             f"{len(output_names)} output name(s) were given: give one name per output")
        outputs = []
        for index, info in enumerate(inferred):
            if output_names is None:
                out_name = self.ir.unique_name(f"{layer_name}_output_{index}")
            else:
                out_name = output_names[index]
                self.ir.claim_name(out_name)
            outputs.append(Tensor(out_name, info.dtype, info.shape, value=info.value))
        layer = Layer(layer_name, op, list(inputs), outputs)
        for tensor in outputs:
            tensor.producer = layer
        self.ir.layers.append(layer)
        return layer

    # ---- convolutions ------------------------------------------------------------------------
    def add_convolution(self, input: Tensor, num_output_maps: int, kernel_shape: Sequence[int],
                        kernel: WeightsLike, bias: WeightsLike = None, stride=1, padding=0, dilation=1,
                        groups: int = 1, pre_padding=None, post_padding=None, name: str | None = None) -> Layer:
        """N-d convolution; `padding` is symmetric, `pre_padding`/`post_padding` override each side."""
        rank = len(kernel_shape)
        base = name or "convolution"
        w = self.weights(self._kernel_array(kernel, (num_output_maps, input.shape[1] // groups, *kernel_shape)),
                         base + ".weight")
        b = self.weights(bias, base + ".bias")
        begin = _pair(pre_padding if pre_padding is not None else padding, rank)
        end = _pair(post_padding if post_padding is not None else padding, rank)
        op = ops.Convolution(_pair(stride, rank), begin + end, _pair(dilation, rank), groups)
        return self.add_layer(op, [input, w, b], name)

    def add_deconvolution(self, input: Tensor, num_output_maps: int, kernel_shape: Sequence[int],
                          kernel: WeightsLike, bias: WeightsLike = None, stride=1, padding=0, dilation=1,
                          groups: int = 1, output_padding=0, name: str | None = None) -> Layer:
        rank = len(kernel_shape)
        base = name or "deconvolution"
        w = self.weights(self._kernel_array(kernel, (input.shape[1], num_output_maps // groups, *kernel_shape)),
                         base + ".weight")
        b = self.weights(bias, base + ".bias")
        pads = _pair(padding, rank)
        op = ops.Deconvolution(_pair(stride, rank), pads + pads, _pair(dilation, rank),
                               _pair(output_padding, rank), groups)
        return self.add_layer(op, [input, w, b], name)

    @staticmethod
    def _kernel_array(kernel: WeightsLike, shape: tuple[int, ...]) -> WeightsLike:
        if isinstance(kernel, Tensor) or kernel is None:
            return kernel
        array = np.asarray(kernel, dtype=np.float32)
        if array.size != int(np.prod(shape)):
            raise ShapeError(f"kernel weights hold {array.size} values; shape {shape} needs {int(np.prod(shape))}")
        return array.reshape(shape)

    # ---- pointwise ---------------------------------------------------------------------------
    def add_activation(self, input: Tensor, type: ActivationType, alpha: float = 0.0, beta: float = 0.0,
                       name: str | None = None) -> Layer:
        return self.add_layer(ops.Activation(type, float(alpha), float(beta)), [input], name)

    def add_parametric_relu(self, input: Tensor, slopes: WeightsLike, name: str | None = None) -> Layer:
        return self.add_layer(ops.ParametricReLU(), [input, self.weights(slopes, (name or "prelu") + ".slope")],
                              name)

    def add_unary(self, input: Tensor, operation: UnaryOperation, name: str | None = None) -> Layer:
        return self.add_layer(ops.Unary(operation), [input], name)

    def add_elementwise(self, input1: Tensor, input2: Tensor, operation: ElementWiseOperation,
                        name: str | None = None) -> Layer:
        return self.add_layer(ops.ElementWise(operation), [input1, input2], name)

    def add_select(self, condition: Tensor, then_input: Tensor, else_input: Tensor,
                   name: str | None = None) -> Layer:
        return self.add_layer(ops.Select(), [condition, then_input, else_input], name)

    def add_scale(self, input: Tensor, mode: ScaleMode, shift: WeightsLike = None, scale: WeightsLike = None,
                  power: WeightsLike = None, channel_axis: int = 1, name: str | None = None) -> Layer:
        """out = (input * scale + shift) ** power, coefficients per tensor, per channel or per element."""
        base = name or "scale"
        tensors = [self.weights(scale, base + ".scale"), self.weights(shift, base + ".shift"),
                   self.weights(power, base + ".power")]
        op = ops.Scale(mode, channel_axis, *(t is not None for t in tensors))
        return self.add_layer(op, [input, *tensors], name)

    # ---- pooling and normalization -----------------------------------------------------------
    def add_pooling(self, input: Tensor, type: PoolingType, window_size: Sequence[int], stride=None, padding=0,
                    ceil_mode: bool = False, count_include_pad: bool = True, pre_padding=None, post_padding=None,
                    dilation=1, name: str | None = None) -> Layer:
        rank = len(window_size)
        begin = _pair(pre_padding if pre_padding is not None else padding, rank)
        end = _pair(post_padding if post_padding is not None else padding, rank)
        op = ops.Pooling(type, tuple(window_size), _pair(stride if stride is not None else window_size, rank),
                         begin + end, _pair(dilation, rank), ceil_mode, count_include_pad)
        return self.add_layer(op, [input], name)

    def add_global_pooling(self, input: Tensor, type: PoolingType, name: str | None = None) -> Layer:
        return self.add_layer(ops.GlobalPooling(type), [input], name)

    def add_lrn(self, input: Tensor, window: int, alpha: float, beta: float, k: float,
                name: str | None = None) -> Layer:
        return self.add_layer(ops.LRN(window, float(alpha), float(beta), float(k)), [input], name)

    def add_layer_norm(self, input: Tensor, scale: WeightsLike, bias: WeightsLike = None, axis: int = -1,
                       epsilon: float = 1e-5, name: str | None = None) -> Layer:
        base = name or "layer_norm"
        return self.add_layer(ops.LayerNorm(axis, float(epsilon)),
                              [input, self.weights(scale, base + ".scale"), self.weights(bias, base + ".bias")], name)

    def add_softmax(self, input: Tensor, axis: int = -1, log: bool = False, name: str | None = None) -> Layer:
        return self.add_layer(ops.Softmax(axis, log), [input], name)

    def add_reduce(self, input: Tensor, operation: ReduceOperation, axes: Sequence[int], keep_dims: bool = True,
                   name: str | None = None) -> Layer:
        return self.add_layer(ops.Reduce(operation, tuple(axes), keep_dims), [input], name)

    # ---- matrix products ----------------------------------------------------------------------
    def add_matrix_multiply(self, input0: Tensor, input1: Tensor, transpose0: bool = False,
                            transpose1: bool = False, name: str | None = None) -> Layer:
        return self.add_layer(ops.MatrixMultiply(transpose0, transpose1), [input0, input1], name)

    def add_fully_connected(self, input: Tensor, num_outputs: int, kernel: WeightsLike, bias: WeightsLike = None,
                            axis: int = 1, name: str | None = None) -> Layer:
        """out[..., k] = sum_c flatten(input)[..., c] * kernel[k, c] + bias[k]; flattened from `axis` on."""
        base = name or "fully_connected"
        if not isinstance(kernel, Tensor):
            kernel = np.asarray(kernel, dtype=np.float32).reshape(num_outputs, -1)
        return self.add_layer(ops.FullyConnected(axis),
                              [input, self.weights(kernel, base + ".weight"), self.weights(bias, base + ".bias")],
                              name)

    # ---- data movement -----------------------------------------------------------------------
    def add_concatenation(self, inputs: Sequence[Tensor], axis: int = 1, name: str | None = None) -> Layer:
        return self.add_layer(ops.Concatenation(axis), list(inputs), name)

    def add_shuffle(self, input: Tensor, first_transpose: Sequence[int] | None = None,
                    reshape_dims: Sequence[int] | None = None, second_transpose: Sequence[int] | None = None,
                    name: str | None = None) -> Layer:
        """Transpose, reshape (0 copies the input dim, -1 is inferred), transpose."""
        dims = None
        if reshape_dims is not None:
            source = input.shape if first_transpose is None else tuple(input.shape[p] for p in first_transpose)
            dims = resolve_reshape(source, reshape_dims, allow_zero_copy=True)
        op = ops.Shuffle(_opt(first_transpose), dims, _opt(second_transpose))
        return self.add_layer(op, [input], name)

    def add_gather(self, input: Tensor, indices: Tensor, axis: int = 0, name: str | None = None) -> Layer:
        return self.add_layer(ops.Gather(axis), [input, indices], name)

    def add_slice(self, input: Tensor, start: Sequence[int], shape: Sequence[int], stride: Sequence[int],
                  name: str | None = None) -> Layer:
        axes = tuple(range(len(start)))
        # ends clamped as ops.Slice holds them: a backward slice through index 0 ends at -1
        ends = tuple(s + (n - 1) * st + (1 if st > 0 else -1) for s, n, st in zip(start, shape, stride))
        return self.add_layer(ops.Slice(tuple(start), ends, axes, tuple(stride)), [input], name)

    def add_padding(self, input: Tensor, pre_padding: Sequence[int], post_padding: Sequence[int],
                    mode: PaddingMode = PaddingMode.CONSTANT, value: float = 0.0, name: str | None = None) -> Layer:
        """Pads the trailing len(pre_padding) dims."""
        lead = (0,) * (len(input.shape) - len(pre_padding))
        op = ops.Pad(lead + tuple(pre_padding) + lead + tuple(post_padding), mode, float(value))
        return self.add_layer(op, [input], name)

    def add_cast(self, input: Tensor, to: DataType, name: str | None = None) -> Layer:
        return self.add_layer(ops.Cast(to), [input], name)

    def add_identity(self, input: Tensor, name: str | None = None) -> Layer:
        return self.add_layer(ops.Identity(), [input], name)


def _opt(values: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(int(v) for v in values)


def resolve_reshape(source: Sequence[int], dims: Sequence[int], allow_zero_copy: bool) -> tuple[int, ...]:
    """Resolve 0 (copy the source dim, if allowed) and one -1 (inferred) in a reshape target."""
    dims = [int(d) for d in dims]
    if allow_zero_copy:
        dims = [source[i] if d == 0 else d for i, d in enumerate(dims)]
    total = int(np.prod(source, dtype=np.int64))
    if dims.count(-1) > 1:
        raise ShapeError(f"reshape target {tuple(dims)} has more than one -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise ShapeError(f"cannot reshape {tuple(source)} into {tuple(dims)}")
        dims[dims.index(-1)] = total // known
    if int(np.prod(dims, dtype=np.int64)) != total:
        raise ShapeError(f"cannot reshape {tuple(source)} ({total} elements) into {tuple(dims)}")
    return tuple(dims)
