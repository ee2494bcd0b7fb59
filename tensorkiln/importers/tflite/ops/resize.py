"""RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR: resized in place over the NHWC spatial dims.

TensorFlow's coordinate rules in ONNX Resize's terms: align_corners -> align_corners (nearest rounds half up),
half_pixel_centers -> half_pixel (bilinear) / tf_half_pixel_for_nn with floor (nearest), neither ->
asymmetric with floor."""
from __future__ import annotations

from ....ir import ops
from ....ir.ops import ResizeMode
from ..registry import converter


@converter("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
def resize(ctx, op):
    x = ctx.input(0)
    height, width = ctx.ints(1, "output size")
    shape = (x.shape[0], height, width, x.shape[3])
    scales = (1.0, height / x.shape[1], width / x.shape[2], 1.0)
    nearest = op.op_name == "RESIZE_NEAREST_NEIGHBOR"
    if ctx.option("AlignCorners", False):
        transform, nearest_mode = "align_corners", "round_prefer_ceil"
    elif ctx.option("HalfPixelCenters", False):
        transform = "tf_half_pixel_for_nn" if nearest else "half_pixel"
        nearest_mode = "floor"
    else:
        transform, nearest_mode = "asymmetric", "floor"
    attrs = ops.Resize(ResizeMode.NEAREST if nearest else ResizeMode.LINEAR, shape, scales, transform, nearest_mode)
    return [ctx.network.add_layer(attrs, [x], ctx.name).get_output(0)]
