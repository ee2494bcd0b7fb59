"""Layers served by plugins: the SSD layers (PriorBox, DetectionOutput, Normalize) with their Caffe parameters,
and any layer type without a converter for which a plugin of the same name is registered."""
from __future__ import annotations

from ....plugins import add_plugin, get_plugin
from ..caffemodel import layer_name, layer_type_name
from ..registry import caffe_converter
from ..schema import caffe_pb2

_CODE_TYPES = {value: name for name, value in caffe_pb2.PriorBoxParameter.CodeType.items()}


def _add(ctx, layer, type_name: str, inputs, params):
    try:
        plugin_layer = add_plugin(ctx.network, type_name, inputs, params, name=layer_name(layer))
    except ValueError as error:
        raise ctx.error(layer, str(error)) from None
    return plugin_layer.outputs


@caffe_converter("PriorBox")
def prior_box(ctx, layer):
    p = layer.prior_box_param
    if p.HasField("img_size") and (p.HasField("img_h") or p.HasField("img_w")):
        raise ctx.error(layer, "gives both img_size and img_h/img_w; give one")
    img_h, img_w = (p.img_size, p.img_size) if p.HasField("img_size") else (p.img_h, p.img_w)
    step_h, step_w = (p.step, p.step) if p.HasField("step") else (p.step_h, p.step_w)
    params = dict(min_sizes=tuple(p.min_size), max_sizes=tuple(p.max_size), aspect_ratios=tuple(p.aspect_ratio),
                  flip=p.flip, clip=p.clip, variances=tuple(p.variance) or (0.1,), img_h=img_h, img_w=img_w,
                  step_h=step_h, step_w=step_w, offset=p.offset)
    return _add(ctx, layer, "PriorBox", ctx.inputs(layer)[:2], params)


@caffe_converter("DetectionOutput")
def detection_output(ctx, layer):
    p, nms = layer.detection_output_param, layer.detection_output_param.nms_param
    if not p.HasField("num_classes"):
        raise ctx.error(layer, "has no num_classes")
    params = dict(num_classes=p.num_classes, share_location=p.share_location,
                  background_label_id=p.background_label_id, nms_threshold=nms.nms_threshold,
                  top_k=nms.top_k if nms.HasField("top_k") else -1, eta=nms.eta,
                  code_type=_CODE_TYPES[p.code_type], variance_encoded_in_target=p.variance_encoded_in_target,
                  keep_top_k=p.keep_top_k,
                  confidence_threshold=p.confidence_threshold if p.HasField("confidence_threshold") else None)
    return _add(ctx, layer, "DetectionOutput", ctx.inputs(layer)[:3], params)


@caffe_converter("Normalize")
def normalize(ctx, layer):
    x, p = ctx.input(layer), layer.norm_param
    count = 1 if p.channel_shared else x.shape[1]
    scale = ctx.blob(layer, 0, (count,), "scale")
    params = dict(across_spatial=p.across_spatial, channel_shared=p.channel_shared, eps=p.eps)
    return _add(ctx, layer, "Normalize", [x, ctx.network.weights(scale, layer_name(layer) + ".scale")], params)


def convert_plugin_layer(ctx, layer):
    """A layer type with no converter but a registered plugin: the plugin's `from_caffe` reads the parameters;
    the layer's bottoms, then its trained blobs (as constants), are the plugin's inputs."""
    kind = layer_type_name(layer)
    cls = get_plugin(kind)
    blobs = ctx.weights.get(layer_name(layer), [])
    params = cls.from_caffe(layer, blobs)
    constants = [ctx.network.weights(blob, f"{layer_name(layer)}.blob{i}") for i, blob in enumerate(blobs)]
    outputs = _add(ctx, layer, kind, [*ctx.inputs(layer), *constants], params)
    if len(outputs) != len(layer.top):
        raise ctx.error(layer, f"has {len(layer.top)} tops, but plugin {kind!r} makes {len(outputs)} outputs")
    return outputs
