"""Reading Caffe prototxt and caffemodel files (V1 and V2 layouts), blobs, and the errors on broken files."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from tensorkiln.errors import ModelFormatError
from tensorkiln.importers.caffe import caffemodel
from tensorkiln.importers.caffe.schema import caffe_pb2

LENET = "models/caffe/lenet_mnist"
MTCNN = "models/caffe/mtcnn"


def expected_blob_shapes(deploy: caffe_pb2.NetParameter) -> dict[str, list[tuple[int, ...]]]:
    """Blob shapes a deploy net implies for its convolutions and PReLUs, following channel counts from the
    input; for inner products only the leading dim (the input size needs spatial shapes): (num_output, -1)."""
    channels = {deploy.input[0]: deploy.input_dim[1]}
    shapes: dict[str, list[tuple[int, ...]]] = {}
    for layer in caffemodel.iter_layers(deploy):
        kind = caffemodel.layer_type_name(layer)
        bottom_channels = channels.get(layer.bottom[0]) if layer.bottom else None
        if kind == "Convolution":
            param = layer.convolution_param
            kernel = tuple(param.kernel_size) * 2 if len(param.kernel_size) == 1 else tuple(param.kernel_size)
            shapes[layer.name] = [(param.num_output, bottom_channels // param.group, *kernel), (param.num_output,)]
            channels[layer.top[0]] = param.num_output
        elif kind == "InnerProduct":
            shapes[layer.name] = [(layer.inner_product_param.num_output, -1), (layer.inner_product_param.num_output,)]
            channels[layer.top[0]] = layer.inner_product_param.num_output
        elif kind == "PReLU":
            shapes[layer.name] = [(bottom_channels,)]
            channels[layer.top[0]] = bottom_channels
        elif layer.top:
            channels[layer.top[0]] = bottom_channels
    return shapes


def assert_blobs_match(blobs: dict[str, list[np.ndarray]], expected: dict[str, list[tuple[int, ...]]],
                       legacy_4d: bool) -> None:
    for name, shapes in expected.items():
        assert name in blobs, f"caffemodel has no blobs for layer {name!r}"
        assert len(blobs[name]) == len(shapes), name
        for array, shape in zip(blobs[name], shapes):
            assert array.dtype == np.float32
            assert np.all(np.isfinite(array)), name
            if legacy_4d:  # V1 blobs keep Caffe's (num, channels, height, width): leading 1s pad short shapes
                assert array.ndim == 4 and all(d == 1 for d in array.shape[:4 - len(shape)]), (name, array.shape)
            actual = array.shape[4 - len(shape):] if legacy_4d else array.shape
            assert len(actual) == len(shape), (name, array.shape, shape)
            assert all(e in (-1, a) for a, e in zip(actual, shape)), (name, array.shape, shape)


# ---- real files ----------------------------------------------------------------------------------------------
def test_v1_lenet_caffemodel_and_prototxt(shared_dir):
    deploy = caffemodel.read_prototxt(shared_dir / LENET / "lenet.prototxt")
    trained = caffemodel.read_caffemodel(shared_dir / LENET / "lenet_iter_10000.caffemodel")
    assert deploy.layers and not deploy.layer and trained.layers and not trained.layer  # both V1
    assert list(deploy.input_dim) == [64, 1, 28, 28]
    assert [caffemodel.layer_type_name(layer) for layer in deploy.layers] == [
        "Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct", "ReLU", "InnerProduct", "Softmax"]
    # the trained net is the train/test net: its data and loss layers come in the V2 names Caffe upgrades to
    trained_types = [caffemodel.layer_type_name(layer) for layer in trained.layers]
    assert trained_types[0] == "Data" and trained_types[-1] == "SoftmaxWithLoss"

    blobs = caffemodel.layer_blobs(trained)
    assert sorted(blobs) == ["conv1", "conv2", "ip1", "ip2"]
    assert_blobs_match(blobs, expected_blob_shapes(deploy), legacy_4d=True)
    assert blobs["conv1"][0].shape == (20, 1, 5, 5) and blobs["conv1"][1].shape == (1, 1, 1, 20)
    assert blobs["ip1"][0].shape == (1, 1, 500, 800)  # 800 = 50 x 4 x 4 after pool2


def test_v2_mtcnn_caffemodel_and_prototxt(shared_dir):
    deploy = caffemodel.read_prototxt(shared_dir / MTCNN / "det1.prototxt")
    trained = caffemodel.read_caffemodel(shared_dir / MTCNN / "det1.caffemodel")
    assert deploy.layer and not deploy.layers and trained.layer and not trained.layers  # both V2
    assert caffemodel.layer_type_name(deploy.layer[1]) == "PReLU"
    # the trained file holds training-only layers (HDF5Data, losses) whose parameters this schema leaves out:
    # they are kept as unknown fields and do not stop the parse
    assert "HDF5Data" in {caffemodel.layer_type_name(layer) for layer in trained.layer}

    blobs = caffemodel.layer_blobs(trained)
    expected = expected_blob_shapes(deploy)
    assert set(expected) == set(blobs)
    assert_blobs_match(blobs, expected, legacy_4d=False)
    assert blobs["conv1"][0].shape == (10, 3, 3, 3) and blobs["PReLU1"][0].shape == (10,)
    assert blobs["conv4-2"][0].shape == (4, 32, 1, 1)


# ---- blobs ---------------------------------------------------------------------------------------------------
def test_blob_to_array_shapes_and_values():
    values = np.arange(6, dtype=np.float32)
    blob = caffe_pb2.BlobProto(data=values.tolist())
    blob.shape.dim.extend([2, 3])
    np.testing.assert_array_equal(caffemodel.blob_to_array(blob), values.reshape(2, 3))

    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=values.tolist())
    assert caffemodel.blob_to_array(legacy).shape == (1, 2, 1, 3)

    doubles = caffe_pb2.BlobProto(double_data=[0.1, 0.2])
    doubles.shape.dim.append(2)
    array = caffemodel.blob_to_array(doubles)
    assert array.dtype == np.float32 and np.allclose(array, [0.1, 0.2])

    scalar = caffe_pb2.BlobProto(data=[5.0])
    scalar.shape.SetInParent()  # a shape with no dims: a scalar
    assert caffemodel.blob_to_array(scalar).shape == ()

    assert caffemodel.blob_to_array(caffe_pb2.BlobProto(data=[1.0, 2.0])).shape == (2,)  # no shape at all

    wrong = caffe_pb2.BlobProto(data=[1.0, 2.0, 3.0])
    wrong.shape.dim.extend([2, 2])
    with pytest.raises(ModelFormatError, match="holds 3 values"):
        caffemodel.blob_to_array(wrong)


def test_unpacked_blob_data_decodes():
    # old writers stored repeated floats unpacked (one tag per value); proto2 parsers accept both encodings
    unpacked = b"".join(struct.pack("<Bf", (5 << 3) | 5, v) for v in (1.5, -2.0, 3.25))
    blob = caffe_pb2.BlobProto.FromString(unpacked)
    np.testing.assert_array_equal(caffemodel.blob_to_array(blob), np.float32([1.5, -2.0, 3.25]))


def test_layer_blobs_reads_v1_and_v2_nets_alike():
    weight = caffe_pb2.BlobProto(data=[1.0, 2.0])
    weight.shape.dim.append(2)
    v2 = caffe_pb2.NetParameter()
    v2.layer.add(name="a", type="Scale", blobs=[weight])
    v2.layer.add(name="relu", type="ReLU")
    v1 = caffe_pb2.NetParameter()
    v1.layers.add(name="a", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, blobs=[weight])
    for net in (v2, v1):
        blobs = caffemodel.layer_blobs(net)
        assert list(blobs) == ["a"]
        np.testing.assert_array_equal(blobs["a"][0], [1.0, 2.0])
    both = caffe_pb2.NetParameter()
    both.CopyFrom(v2)
    both.layers.add(name="b", type=caffe_pb2.V1LayerParameter.RELU)
    with pytest.raises(ModelFormatError, match="both V2 layers"):
        caffemodel.layer_blobs(both)


def test_layer_type_names():
    v1 = caffe_pb2.V1LayerParameter
    assert caffemodel.layer_type_name(v1(type=v1.CONVOLUTION)) == "Convolution"
    assert caffemodel.layer_type_name(v1(type=v1.INNER_PRODUCT)) == "InnerProduct"
    assert caffemodel.layer_type_name(v1(type=v1.SOFTMAX_LOSS)) == "SoftmaxWithLoss"
    assert caffemodel.layer_type_name(v1(type=v1.TANH)) == "TanH"
    assert caffemodel.layer_type_name(caffe_pb2.LayerParameter(type="Permute")) == "Permute"
    # every V1 enum value has a V2 name, except NONE
    assert set(caffemodel.V1_TYPE_NAMES) == {v.number for v in v1.LayerType.DESCRIPTOR.values if v.number != 0}
    v0_layer = v1()
    v0_layer.layer.type = "conv"
    v0_layer.layer.name = "old_conv"
    assert caffemodel.layer_type_name(v0_layer) == "Convolution"
    with pytest.raises(ModelFormatError, match="no type"):
        caffemodel.layer_type_name(v1(name="typeless"))


def test_ssd_fork_fields_parse(tmp_path):
    path = tmp_path / "ssd.prototxt"
    path.write_text('layer { name: "p" type: "Permute" bottom: "x" top: "y" permute_param { order: 0 order: 2 '
                    'order: 3 order: 1 } }\n'
                    'layer { name: "n" type: "Normalize" bottom: "y" top: "z" norm_param { across_spatial: false '
                    'channel_shared: false scale_filler { type: "constant" value: 20 } } }\n'
                    'layer { name: "pb" type: "PriorBox" bottom: "z" bottom: "data" top: "pb" prior_box_param { '
                    'min_size: 30 max_size: 60 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.2 step: 8 } }\n'
                    'layer { name: "d" type: "DetectionOutput" bottom: "a" bottom: "b" bottom: "pb" top: "out" '
                    'detection_output_param { num_classes: 21 nms_param { nms_threshold: 0.45 top_k: 400 } '
                    'code_type: CENTER_SIZE keep_top_k: 200 confidence_threshold: 0.01 } }\n')
    net = caffemodel.read_prototxt(path)
    assert list(net.layer[0].permute_param.order) == [0, 2, 3, 1]
    assert net.layer[1].norm_param.scale_filler.value == 20
    assert net.layer[3].detection_output_param.code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    # the binary form round-trips with the fork's field numbers (permute_param = 202, norm_param = 206)
    assert caffe_pb2.NetParameter.FromString(net.SerializeToString()) == net
    assert caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["permute_param"].number == 202
    assert caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["norm_param"].number == 206


# ---- broken files --------------------------------------------------------------------------------------------
def test_prototxt_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "net"\nlayer {\n  name: "conv"\n  type: Convolution\n}\n')  # type needs quotes
    with pytest.raises(ModelFormatError) as raised:
        caffemodel.read_prototxt(path)
    message = str(raised.value)
    assert "broken.prototxt" in message and "line 4, column 9" in message


def test_prototxt_unknown_field(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text('layer {\n  name: "i"\n  type: "Interp"\n  interp_param { zoom_factor: 2 }\n}\n')
    with pytest.raises(ModelFormatError, match="line 4, column 3.*interp_param"):
        caffemodel.read_prototxt(path)
    assert caffemodel.read_prototxt(path, allow_unknown_fields=True).layer[0].type == "Interp"


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_caffemodel(shared_dir, tmp_path, cut):
    data = (shared_dir / LENET / "lenet_iter_10000.caffemodel").read_bytes()
    path = tmp_path / "truncated.caffemodel"
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ModelFormatError, match="truncated.caffemodel.*cannot be decoded.*truncated"):
        caffemodel.read_caffemodel(path)


def test_garbage_empty_and_missing_caffemodels(shared_dir, tmp_path):
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFormatError, match="cannot be decoded"):
        caffemodel.read_caffemodel(garbage)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="holds no layers"):
        caffemodel.read_caffemodel(empty)
    with pytest.raises(ModelFormatError, match="read_prototxt"):
        caffemodel.read_caffemodel(shared_dir / LENET / "lenet.prototxt")
    with pytest.raises(ModelFormatError, match="does not exist"):
        caffemodel.read_caffemodel(tmp_path / "missing.caffemodel")
