"""Bound CPU kernels (kernels/cpu/bound*.py) compute what their kernels compute, on awkward shapes, including the
runs a binder did not plan for (an NCHW input to a convolution bound for NHWC), and leave their inputs alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorkiln.errors import InputError
from tensorkiln.ir import ops
from tensorkiln.ir.ops import ActivationType, PaddingMode, PoolingType, ResizeMode
from tensorkiln.kernels.cpu.bound import BoundInput, bind_kernel
from tensorkiln.kernels.cpu.conv import convolution
from tensorkiln.kernels.cpu.fused import fused_convolution, fused_matmul, fused_pointwise
from tensorkiln.kernels.cpu.linalg import matrix_multiply
from tensorkiln.kernels.cpu.pooling import pooling
from tensorkiln.kernels.cpu.recurrent import recurrent
from tensorkiln.kernels.cpu.resize import resize
from tensorkiln.kernels.cpu.shape_ops import gather, pad

CL, ROW = torch.channels_last, torch.contiguous_format


def _activation(tensor, memory_format=ROW):
    return BoundInput(tuple(tensor.shape), tensor.dtype, None, memory_format)


def _weight(tensor, memory_format=ROW):
    return BoundInput(tuple(tensor.shape), tensor.dtype, tensor, memory_format)


def _close(actual, expected):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["relu", "residual_relu", "prelu", "hardswish"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw_at_run"])
def test_fused_convolution(form, layout):
    torch.manual_seed(0)
    x = torch.randn(1, 7, 11, 13).contiguous(memory_format=CL)
    weight = torch.randn(5, 7, 3, 3).contiguous(memory_format=CL)
    bias, residual, slope = torch.randn(5), torch.randn(1, 5, 11, 13).contiguous(memory_format=CL), torch.rand(5, 1, 1)
    activation = {"relu": ActivationType.RELU, "hardswish": ActivationType.HARD_SWISH}.get(form)
    op = ops.FusedConvolution((1, 1), (1, 1, 1, 1), (1, 1), 1, activation=activation,
                              prelu=form == "prelu", residual=form == "residual_relu",
                              post_activation=ActivationType.RELU if form == "residual_relu" else None)
    args = [x, weight, bias, residual if op.residual else None, slope if op.prelu else None]
    specs = [_activation(x, CL), _weight(weight, CL), _weight(bias), _activation(residual, CL) if op.residual else None,
             _weight(slope) if op.prelu else None]
    call = bind_kernel("fused_convolution", "torch", op, specs, [_activation(torch.empty(1, 5, 11, 13), CL)])
    if layout == "nchw_at_run":  # an activation that arrives in the other layout: the plain convolution runs
        args[0] = x.contiguous()
    expected = fused_convolution(op, [a if a is None else a.clone() for a in args])
    kept = [a if a is None else a.clone() for a in args]
    _close(call(args), expected)
    for a, b in zip(args, kept):
        assert a is None or torch.equal(a, b)


def test_fused_convolution_1d_asymmetric_pads():
    torch.manual_seed(1)
    x, weight, bias = torch.randn(1, 3, 17), torch.randn(4, 3, 5), torch.randn(4)
    op = ops.FusedConvolution((2,), (1, 3), (1,), 1, activation=ActivationType.SIGMOID)
    call = bind_kernel("fused_convolution", "torch", op, [_activation(x), _weight(weight), _weight(bias)],
                       [_activation(torch.empty(1, 4, 8))])
    _close(call([x, weight, bias]), fused_convolution(op, [x, weight, bias]))


def test_gather_of_constant_indices():
    data = torch.randn(3, 7, 2)
    indices = torch.tensor([[-1, 0], [6, -7]])
    op = ops.Gather(axis=1)
    call = bind_kernel("gather", "torch", op, [_activation(data), _weight(indices)], [])
    _close(call([data, indices]), gather(op, [data, indices]))


def test_gather_out_of_range_is_left_to_the_kernel():
    data, indices = torch.randn(4, 3), torch.tensor([4])
    assert bind_kernel("gather", "torch", ops.Gather(0), [_activation(data), _weight(indices)], []) is None
    with pytest.raises(InputError):
        gather(ops.Gather(0), [data, indices])


@pytest.mark.parametrize("mode", [PaddingMode.REFLECT, PaddingMode.EDGE, PaddingMode.WRAP])
def test_pad(mode):
    x = torch.randn(2, 5, 7)
    op = ops.Pad((0, 2, 3, 0, 1, 4), mode)
    call = bind_kernel("pad", "torch", op, [_activation(x)], [])
    _close(call([x]), pad(op, [x]))


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("initial_state", [False, True])
def test_lstm(direction, initial_state):
    torch.manual_seed(2)
    steps, batch, features, hidden = 5, 3, 7, 11
    directions = 2 if direction == "bidirectional" else 1
    x = torch.randn(steps, batch, features)
    w, r = torch.randn(directions, 4 * hidden, features), torch.randn(directions, 4 * hidden, hidden)
    b = torch.randn(directions, 8 * hidden)
    h0, c0 = torch.randn(directions, batch, hidden), torch.randn(directions, batch, hidden)
    args = [x, w, r, b, None, h0 if initial_state else None, c0 if initial_state else None, None]
    op = ops.Recurrent("lstm", hidden, direction)
    specs = [_activation(x), _weight(w), _weight(r), _weight(b), None,
             _activation(h0) if initial_state else None, _activation(c0) if initial_state else None, None]
    call = bind_kernel("recurrent", "torch", op, specs, [])
    assert call is not None
    _close(call(args), recurrent(op, args))


def test_lstm_forms_the_cell_does_not_serve_are_left_to_the_kernel():
    x, w, r = torch.randn(2, 1, 3), torch.randn(1, 8, 3), torch.randn(1, 8, 2)
    specs = [_activation(x), _weight(w), _weight(r)]
    for op in (ops.Recurrent("lstm", 2, "reverse"), ops.Recurrent("lstm", 2, clip=1.0),
               ops.Recurrent("lstm", 2, input_forget=True), ops.Recurrent("gru", 2)):
        assert bind_kernel("recurrent", "torch", op, specs, []) is None


HARD_SWISH = ("t0 = sum in0 in1", "t1 = clip t0 0.0 6.0", "t2 = prod in0 t1", "t3 = div t2 in2", "t4 = prod in3 t3",
              "t5 = sum t4 in4", "out = t5")


def test_pointwise_program_reuses_its_intermediates_and_not_its_inputs():
    torch.manual_seed(3)
    x = torch.randn(1, 6, 5, 9).contiguous(memory_format=CL)
    three, six, w0, w1 = torch.tensor(3.0), torch.tensor(6.0), torch.randn(1), torch.randn(1)
    args = [x, three, six, w0, w1]
    op = ops.FusedPointwise(HARD_SWISH)
    call = bind_kernel("fused_pointwise", "torch", op, [_activation(x, CL)] + [_weight(t) for t in args[1:]],
                       [_activation(x, CL)])
    kept = [a.clone() for a in args]
    _close(call(args), fused_pointwise(op, args))
    for a, b in zip(args, kept):
        assert torch.equal(a, b)
    reused = sum(1 for cell in call.__closure__ if isinstance(cell.cell_contents, tuple)
                 for step in cell.cell_contents if isinstance(step, tuple) and len(step) == 4 and step[3] is not None)
    assert reused == 5  # every instruction after the first writes over the one before


def test_pointwise_program_broadcasting_to_a_larger_shape_allocates():
    a, b = torch.randn(4, 1), torch.randn(1, 5)
    op = ops.FusedPointwise(("t0 = sigmoid in0", "t1 = sum t0 in1", "out = t1"))
    call = bind_kernel("fused_pointwise", "torch", op, [_activation(a), _activation(b)], [_activation(a)])
    _close(call([a, b]), fused_pointwise(op, [a, b]))
    np.testing.assert_equal(tuple(call([a, b])[0].shape), (4, 5))


@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("form", ["plain", "prelu", "residual"])
def test_fused_matmul(transpose_b, form):
    torch.manual_seed(4)
    a = torch.randn(2, 3, 13)
    b = torch.randn(7, 13) if transpose_b else torch.randn(13, 7)
    bias, residual, slope = torch.randn(7), torch.randn(2, 3, 7), torch.rand(7)
    op = ops.FusedMatMul(transpose_b=transpose_b, prelu=form == "prelu", residual=form == "residual",
                         post_activation=ActivationType.TANH if form == "residual" else None)
    args = [a, b, bias, residual if op.residual else None, slope if op.prelu else None]
    specs = [_activation(a), _weight(b), _weight(bias), _activation(residual) if op.residual else None,
             _weight(slope) if op.prelu else None]
    call = bind_kernel("fused_matmul", "torch", op, specs, [_activation(torch.empty(2, 3, 7))])
    assert call is not None
    _close(call(list(args)), fused_matmul(op, list(args)))


@pytest.mark.parametrize("pads, ceil", [((0, 0, 0, 0), False), ((1, 1, 1, 1), False), ((0, 1, 2, 0), False),
                                        ((0, 0, 0, 0), True)])
def test_max_pooling(pads, ceil):
    x = torch.randn(1, 5, 11, 8).contiguous(memory_format=CL)
    op = ops.Pooling(PoolingType.MAX, (3, 3), (2, 2), pads, (1, 1), ceil_mode=ceil)
    call = bind_kernel("pooling", "torch", op, [_activation(x, CL)], [])
    assert call is not None
    _close(call([x]), pooling(op, [x]))


@pytest.mark.parametrize("mode, transform, scales, shape, served", [
    (ResizeMode.NEAREST, "asymmetric", (2.0, 3.0), (1, 5, 7, 4), True),
    (ResizeMode.NEAREST, "asymmetric", (8.0, 8.0), (1, 3, 2, 3), True),
    (ResizeMode.LINEAR, "half_pixel", (2.0, 2.0), (1, 4, 5, 6), True),
    (ResizeMode.LINEAR, "half_pixel", (0.5, 0.5), (1, 4, 6, 8), True),  # downsampling, no antialias
    (ResizeMode.LINEAR, "pytorch_half_pixel", (3.0, 1.0), (2, 3, 4, 5), True),
    (ResizeMode.LINEAR, "align_corners", (2.0, 2.0), (1, 2, 3, 3), False),
    (ResizeMode.NEAREST, "half_pixel", (2.0, 2.0), (1, 2, 3, 3), False),
    (ResizeMode.CUBIC, "half_pixel", (2.0, 2.0), (1, 2, 3, 3), False),
])
def test_resize(mode, transform, scales, shape, served):
    x = torch.randn(shape).contiguous(memory_format=CL)
    out = shape[:2] + tuple(int(n * s) for n, s in zip(shape[2:], scales))
    op = ops.Resize(mode, out, (1.0, 1.0) + scales, transform, "floor")
    call = bind_kernel("resize", "torch", op, [_activation(x, CL)], [_activation(torch.empty(out), CL)])
    assert (call is not None) == served
    if served:
        _close(call([x]), resize(op, [x]))


@pytest.mark.parametrize("transpose_b", [False, True])
def test_matrix_multiply_by_a_constant(transpose_b):
    torch.manual_seed(5)
    a = torch.randn(1, 9, 17)
    b = torch.randn(11, 17) if transpose_b else torch.randn(17, 11)
    op = ops.MatrixMultiply(transpose_b=transpose_b)
    out = [_activation(torch.empty(1, 9, 11))]
    call = bind_kernel("matrix_multiply", "torch", op, [_activation(a), _weight(b)], out)
    assert call is not None
    _close(call([a, b]), matrix_multiply(op, [a, b]))
    # a product of two activations is left to the kernel
    assert bind_kernel("matrix_multiply", "torch", op, [_activation(a), _activation(b)], out) is None


@pytest.mark.parametrize("with_bias", [False, True])
def test_plain_convolution(with_bias):
    torch.manual_seed(6)
    x, weight, bias = torch.randn(1, 4, 9, 7).contiguous(memory_format=CL), torch.randn(6, 2, 3, 2), torch.randn(6)
    op = ops.Convolution((2, 1), (1, 0, 0, 1), (1, 2), 2)
    args = [x, weight, bias] if with_bias else [x, weight]
    call = bind_kernel("convolution", "torch", op, [_activation(x, CL)] + [_weight(t) for t in args[1:]], [])
    _close(call(args), convolution(op, args))
