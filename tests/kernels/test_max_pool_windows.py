"""NHWC max pooling of few channels and many windows as the maximum of shifted strided views (kernels/cpu/
bound_linalg.py): the same values as torch's max_pool2d (window sizes, strides, dilation, a cropped end, NaN), and
the layers it does not serve keep torch's pooling."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tensorkiln.ir import ops
from tensorkiln.ir.ops import PoolingType
from tensorkiln.kernels.cpu.bound import BoundInput, bind_kernel
from tensorkiln.kernels.cpu.bound_linalg import _max_of_shifted_windows
from tensorkiln.kernels.cpu.pooling import pooling

CL = torch.channels_last


def _bound(op, x, out_shape):
    spec = BoundInput(tuple(x.shape), x.dtype, None, CL)
    return bind_kernel("pooling", "torch", op, [spec], [BoundInput(tuple(out_shape), x.dtype, None, CL)])


# (input shape, kernel, stride, dilation, pads)
CASES = [
    ((1, 10, 118, 158), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0)),  # MTCNN P-Net
    ((1, 10, 117, 157), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0)),  # odd sizes: the last row and column are left out
    ((1, 3, 200, 190), (3, 2), (1, 3), (2, 1), (0, 0, 0, 0)),  # dilation, unequal window and strides
]


@pytest.mark.parametrize("shape,kernel,stride,dilation,pads", CASES, ids=str)
def test_matches_torch_max_pool(shape, kernel, stride, dilation, pads):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=CL)
    x[0, 1, 5, 7] = float("nan")
    x[0, 2, 9, 9] = float("inf")
    op = ops.Pooling(PoolingType.MAX, kernel, stride, pads, dilation)
    expected = F.max_pool2d(x, kernel, stride, 0, dilation)
    call = _bound(op, x, expected.shape)
    result = call([x])[0]
    assert result.shape == expected.shape and result.is_contiguous(memory_format=CL)
    torch.testing.assert_close(result, expected, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(pooling(op, [x])[0], expected, equal_nan=True, rtol=0, atol=0)
    # an NCHW input at run time: still right
    torch.testing.assert_close(call([x.contiguous()])[0], expected, equal_nan=True, rtol=0, atol=0)


def test_served_only_for_few_channels_and_many_windows(monkeypatch):
    served = []
    import tensorkiln.kernels.cpu.bound_linalg as bound_linalg

    monkeypatch.setattr(bound_linalg, "_max_of_shifted_windows",
                        lambda op, shape: served.append(shape) or _max_of_shifted_windows(op, shape))
    op = ops.Pooling(PoolingType.MAX, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    for shape, expect in [((1, 10, 118, 158), True), ((1, 28, 22, 22), False), ((1, 16, 118, 158), False),
                          ((1, 8, 48, 96), False)]:
        x = torch.randn(shape).contiguous(memory_format=CL)
        expected = F.max_pool2d(x, 2, 2)
        served.clear()
        torch.testing.assert_close(_bound(op, x, expected.shape)([x])[0], expected)
        assert bool(served) == expect, shape
    padded = ops.Pooling(PoolingType.MAX, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    x = torch.randn(1, 10, 118, 158).contiguous(memory_format=CL)
    served.clear()
    torch.testing.assert_close(_bound(padded, x, (1, 10, 59, 79))([x])[0], F.max_pool2d(x, 3, 2, 1))
    assert not served  # padding: torch's pooling
