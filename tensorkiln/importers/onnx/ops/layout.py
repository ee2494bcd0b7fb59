"""DepthToSpace and SpaceToDepth, as reshape -> transpose -> reshape shuffles."""
from __future__ import annotations

from ..registry import converter


def _shuffle(ctx, node, x, reshape, perm, final):
    net, name = ctx.network, ctx.name(node)
    grouped = net.add_shuffle(x, reshape_dims=reshape, name=name).get_output(0)
    return [net.add_shuffle(grouped, first_transpose=perm, reshape_dims=final, name=name).get_output(0)]


@converter("DepthToSpace")
def depth_to_space(ctx, node):
    x = ctx.input(node, 0)
    b = ctx.attr(node, "blocksize")
    n, c, h, w = x.shape
    final = (n, c // (b * b), h * b, w * b)
    if ctx.attr(node, "mode", "DCR") == "DCR":
        return _shuffle(ctx, node, x, (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2), final)
    return _shuffle(ctx, node, x, (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3), final)


@converter("SpaceToDepth")
def space_to_depth(ctx, node):
    x = ctx.input(node, 0)
    b = ctx.attr(node, "blocksize")
    n, c, h, w = x.shape
    return _shuffle(ctx, node, x, (n, c, h // b, b, w // b, b), (0, 3, 5, 1, 2, 4), (n, c * b * b, h // b, w // b))
