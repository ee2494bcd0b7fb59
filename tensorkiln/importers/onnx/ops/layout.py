"""DepthToSpace and SpaceToDepth, as reshape -> transpose -> reshape shuffles."""
from __future__ import annotations

from ..registry import converter


def _shuffle(ctx, node, x, reshape, perm, final):
    net, name = ctx.network, ctx.name(node)
    grouped = net.add_shuffle(x, reshape_dims=reshape, name=name).get_output(0)
    return [net.add_shuffle(grouped, first_transpose=perm, reshape_dims=final, name=name).get_output(0)]


def _checked(ctx, node, x):
    """(blocksize, (n, c, h, w)) of a 4-d input and a blocksize of at least 1 that divides what it must (C by
    blocksize^2 for DepthToSpace, H and W for SpaceToDepth): a model file's values, checked before any division."""
    b = ctx.attr(node, "blocksize")
    if len(x.shape) != 4:
        raise ctx.shape_error(node, f"input has shape {list(x.shape)}; {node.op_type} takes a 4-d (N, C, H, W) input")
    if not isinstance(b, int) or b < 1:
        raise ctx.error(node, f"blocksize {b} must be a positive integer")
    n, c, h, w = x.shape
    divided = {"channels": (c, b * b)} if node.op_type == "DepthToSpace" else {"height": (h, b), "width": (w, b)}
    for what, (size, by) in divided.items():
        if isinstance(size, int) and size >= 0 and size % by:  # a dynamic dim is checked when it is known
            raise ctx.shape_error(node, f"its input's {what} {size} is not a multiple of {by} (blocksize {b})")
    return b, (n, c, h, w)


@converter("DepthToSpace")
def depth_to_space(ctx, node):
    x = ctx.input(node, 0)
    b, (n, c, h, w) = _checked(ctx, node, x)
    final = (n, c // (b * b), h * b, w * b)
    mode = ctx.attr(node, "mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise ctx.error(node, f"mode {mode!r} is not one of DCR, CRD")
    if mode == "DCR":
        return _shuffle(ctx, node, x, (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2), final)
    return _shuffle(ctx, node, x, (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3), final)


@converter("SpaceToDepth")
def space_to_depth(ctx, node):
    x = ctx.input(node, 0)
    b, (n, c, h, w) = _checked(ctx, node, x)
    return _shuffle(ctx, node, x, (n, c, h // b, b, w // b, b), (0, 3, 5, 1, 2, 4), (n, c * b * b, h // b, w // b))
