"""Data movement against onnxruntime: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split,
Slice, Gather, Expand, Tile, Cast, CastLike, Pad, Identity, Dropout, DepthToSpace, SpaceToDepth; the
attribute -> input changes (Reshape 5, Slice 10, Pad 11, Squeeze/Unsqueeze/Split 13, Pad axes 18)."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_case import Const, check, rand


def ints(*values):
    return Const(np.array(values, np.int64))


@pytest.mark.parametrize("shape, target, allowzero", [
    ((2, 3, 7), (7, 6), 0), ((2, 3, 7), (-1,), 0), ((2, 3, 7), (0, -1), 0), ((1, 13), (13, 1, 1), 0),
    ((2, 3, 7), (0, 7, 3), 0), ((5,), (1, 5), 1),
])
def test_reshape(shape, target, allowzero):
    check("Reshape", [rand(*shape), ints(*target)], opset=14, allowzero=allowzero)


def test_reshape_allowzero_keeps_a_zero_size():
    # a constant input: the importer reads a graph input's dimension 0 as dynamic, so a 0-size input can't be fed
    check("Reshape", [Const(np.zeros((2, 0, 7), np.float32)), ints(0, 7)], opset=14, allowzero=1)


@pytest.mark.parametrize("opset", [7, 13])
def test_reshape_older_opsets(opset):
    check("Reshape", [rand(3, 1, 5), ints(5, -1)], opset=opset)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3, -4])
def test_flatten(axis):
    check("Flatten", [rand(2, 3, 1, 7)], opset=13, axis=axis)


@pytest.mark.parametrize("perm", [None, [0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1]])
def test_transpose(perm):
    check("Transpose", [rand(2, 7, 3)], opset=13, **({} if perm is None else {"perm": perm}))


@pytest.mark.parametrize("axes", [None, [0], [-1], [0, 2]])
@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze(opset, axes):
    x = rand(1, 7, 1, 3, 1)
    if axes is None:
        check("Squeeze", [x], opset=opset)
    elif opset >= 13:
        check("Squeeze", [x, ints(*axes)], opset=opset)
    else:
        check("Squeeze", [x], opset=opset, axes=axes)


@pytest.mark.parametrize("axes", [[0], [-1], [1, 3], [0, -1], [3, 0]])
@pytest.mark.parametrize("opset", [11, 13])
def test_unsqueeze(opset, axes):
    x = rand(7, 3)
    if opset >= 13:
        check("Unsqueeze", [x, ints(*axes)], opset=opset)
    else:
        check("Unsqueeze", [x], opset=opset, axes=axes)


def test_unsqueeze_a_scalar():
    check("Unsqueeze", [np.float32(2.5), ints(0)], opset=13)


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_concat(axis, count):
    inputs = []
    for i in range(count):
        shape = [2, 3, 5]
        shape[axis] = [1, 7, 2][i]
        inputs.append(rand(*shape, seed=i))
    check("Concat", inputs, opset=13, axis=axis)


def test_concat_of_integers_with_a_constant():
    check("Concat", [rand(3, dtype=np.int64, low=0, high=9), ints(7, 8)], opset=11, axis=0)


@pytest.mark.parametrize("axis, sizes, outputs", [(0, None, 2), (1, [2, 5], 2), (-1, [1, 1, 1], 3),
                                                   (1, None, 7), (1, [7], 1)])
@pytest.mark.parametrize("opset", [11, 13])
def test_split(opset, axis, sizes, outputs):
    x = rand(4, 7, 3)
    if sizes is None:
        check("Split", [x], opset=opset, n_outputs=outputs, axis=axis)
    elif opset >= 13:
        check("Split", [x, ints(*sizes)], opset=opset, n_outputs=outputs, axis=axis)
    else:
        check("Split", [x], opset=opset, n_outputs=outputs, axis=axis, split=sizes)


@pytest.mark.parametrize("outputs", [2, 3, 4])
def test_split_num_outputs_with_a_smaller_last_chunk(outputs):
    check("Split", [rand(13, 2)], opset=18, n_outputs=outputs, axis=0, num_outputs=outputs)


SLICES = [
    # starts, ends, axes, steps
    ([1], [5], None, None),
    ([0, 1], [-1, 1000], [0, -1], None),
    ([-3], [-1], [1], None),
    ([6], [0], [1], [-2]),
    ([-1], [-1000], [2], [-1]),
    ([0, 2], [7, 13], [2, 1], [3, 4]),
    ([100], [200], [0], None),           # empty result
    ([2], [2], [1], [1]),                # empty result
]


@pytest.mark.parametrize("starts, ends, axes, steps", SLICES)
def test_slice(starts, ends, axes, steps):
    inputs = [rand(3, 13, 7), ints(*starts), ints(*ends)]
    if axes is not None:
        inputs.append(ints(*axes))
    if steps is not None:
        inputs.append(ints(*steps))
    check("Slice", inputs, opset=13)


def test_slice_with_attributes_before_opset_10():
    check("Slice", [rand(5, 7)], opset=9, starts=[1, -4], ends=[1000, -1], axes=[0, 1])
    check("Slice", [rand(5, 7)], opset=9, starts=[1], ends=[3])


def test_slice_with_int32_indices():
    check("Slice", [rand(5, 7), Const(np.array([1], np.int32)), Const(np.array([6], np.int32)),
                    Const(np.array([1], np.int32)), Const(np.array([2], np.int32))], opset=11)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("indices", [np.array(2), np.array([0, -1, 2]), np.array([[1, 0], [-2, 2]])])
def test_gather(axis, indices):
    check("Gather", [rand(3, 5, 7), Const(indices.astype(np.int64))], opset=13, axis=axis)


def test_gather_with_run_time_int32_indices():
    check("Gather", [rand(7, 4), np.array([[6, 0, 3]], np.int32)], opset=11, axis=0)


@pytest.mark.parametrize("shape, target", [((3, 1), (2, 3, 7)), ((1,), (5,)), ((7,), (1, 1)), ((2, 1, 3), (1, 5, 1)),
                                           ((), (2, 3))])
def test_expand(shape, target):
    check("Expand", [rand(*shape), ints(*target)], opset=13)


@pytest.mark.parametrize("repeats", [(1, 1, 1), (2, 1, 3), (1, 7, 1)])
def test_tile(repeats):
    check("Tile", [rand(2, 3, 1), ints(*repeats)], opset=13)


CASTS = [(np.float32, np.int32), (np.float32, np.int64), (np.float32, np.float16), (np.float32, np.bool_),
         (np.int64, np.float32), (np.int32, np.int8), (np.bool_, np.float32), (np.float16, np.float64),
         (np.uint8, np.int64), (np.float64, np.float32)]


@pytest.mark.parametrize("source, target", CASTS)
def test_cast(source, target):
    from onnx import helper

    x = rand(3, 7, dtype=source, low=-100 if np.dtype(source).kind != "u" else 0, high=100)
    if np.dtype(source).kind == "f":
        x = x.astype(np.float32)
        x[0, :3] = [0.0, -0.0, 0.5]
        x = x.astype(source)
        if np.dtype(target).kind in "iu":
            x = np.clip(x, -100, 100)  # in range of the target type (out-of-range casts are undefined)
    check("Cast", [x], opset=13, to=helper.np_dtype_to_tensor_dtype(np.dtype(target)))


@pytest.mark.parametrize("opset", [7, 19, 21])
def test_cast_opsets(opset):
    from onnx import TensorProto

    check("Cast", [rand(2, 7, low=-50, high=50)], opset=opset, to=TensorProto.INT32)


def test_cast_like():
    check("CastLike", [rand(3, 7, low=-9, high=9), Const(np.zeros(1, np.int64))], opset=15)
    check("CastLike", [rand(3, 5, dtype=np.int32, low=-9, high=9), Const(np.zeros(2, np.float16))], opset=19)


PADS = [(0, 0, 0, 0, 0, 0), (1, 0, 2, 0, 3, 1), (0, 2, 1, 1, 0, 0), (2, 2, 2, 2, 2, 2)]


@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(mode, pads):
    value = [Const(np.array(0.75, np.float32))] if mode == "constant" else []
    check("Pad", [rand(3, 5, 4), ints(*pads), *value], opset=19, mode=mode)


def test_pad_with_negative_pads_crops():
    check("Pad", [rand(3, 7), ints(-1, 2, 0, -3)], opset=13)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_with_attributes_before_opset_11(mode):
    check("Pad", [rand(2, 5, 4)], opset=10, mode=mode, pads=[0, 1, 2, 0, 2, 1], **(
        {"value": -1.5} if mode == "constant" else {}))


@pytest.mark.parametrize("axes", [[1], [-1, 0]])
def test_pad_for_listed_axes_from_opset_18(axes):
    pads = [1, 2] if len(axes) == 1 else [1, 0, 2, 3]
    check("Pad", [rand(3, 5, 4), ints(*pads), Const(np.array(2.0, np.float32)), ints(*axes)], opset=18)


def test_pad_integers():
    check("Pad", [rand(3, 5, dtype=np.int64, low=-9, high=9), ints(1, 0, 0, 2), Const(np.array(7, np.int64))],
          opset=13)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_identity(dtype):
    check("Identity", [rand(2, 7, dtype=dtype, low=-5, high=5)], opset=16)


@pytest.mark.parametrize("opset", [7, 12, 13])
def test_dropout_is_an_identity_in_inference(opset):
    check("Dropout", [rand(3, 7)], opset=opset)


def test_dropout_mask_output_keeps_everything():
    check("Dropout", [rand(3, 7), Const(np.array(0.3, np.float32))], opset=13, n_outputs=2)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("block, shape", [(2, (1, 8, 3, 5)), (3, (2, 9, 1, 2))])
def test_depth_to_space(mode, block, shape):
    check("DepthToSpace", [rand(*shape)], opset=13, blocksize=block, mode=mode)


@pytest.mark.parametrize("block, shape", [(2, (1, 3, 6, 4)), (3, (2, 1, 9, 3)), (1, (1, 2, 3, 5))])
def test_space_to_depth(block, shape):
    check("SpaceToDepth", [rand(*shape)], opset=13, blocksize=block)


I64_MAX = np.iinfo(np.int64).max


def test_slice_with_the_int64_extremes_exporters_write():
    check("Slice", [rand(3, 7), ints(1, -I64_MAX), ints(I64_MAX, I64_MAX), ints(0, 1)], opset=13)
    check("Slice", [rand(3, 7), ints(-1), ints(-I64_MAX - 1), ints(1), ints(-1)], opset=13)


@pytest.mark.parametrize("start, end", [(0, 6), (2, 2), (-100, 100), (-1, 7)])
def test_slice_with_a_negative_step_and_an_empty_range(start, end):
    check("Slice", [rand(3, 7), ints(start), ints(end), ints(1), ints(-2)], opset=13)


def test_slice_negative_step_from_minus_int64_max():
    # onnxruntime 1.32 overflows here (one element where the ONNX definition gives none): onnx's reference
    check("Slice", [rand(3, 7), ints(-I64_MAX), ints(I64_MAX), ints(1), ints(-1)], opset=13, reference="onnx")


@pytest.mark.parametrize("case", ["transpose_1d", "tile_zero", "split_zero_chunk", "pad_reflect_full", "pad_edge_int",
                                  "concat_size_one", "flatten_1d"])
def test_tensor_edge_cases(case):
    cases = {
        "transpose_1d": lambda: check("Transpose", [rand(7)], opset=13),
        "tile_zero": lambda: check("Tile", [rand(2, 3), ints(0, 1)], opset=13),
        "split_zero_chunk": lambda: check("Split", [rand(4, 7), ints(3, 0, 4)], opset=13, n_outputs=3, axis=1),
        "pad_reflect_full": lambda: check("Pad", [rand(3, 5), ints(2, 4, 2, 4)], opset=13, mode="reflect"),
        "pad_edge_int": lambda: check("Pad", [rand(3, 5, dtype=np.int32, low=0, high=9), ints(1, 2, 3, 4)], opset=13,
                                      mode="edge"),
        "concat_size_one": lambda: check("Concat", [rand(1), rand(1, seed=1), rand(5, seed=2)], opset=13, axis=-1),
        "flatten_1d": lambda: check("Flatten", [rand(7)], opset=13, axis=0),
    }
    cases[case]()
