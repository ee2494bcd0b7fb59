"""A bar chart of per-layer times as PNG (`kiln bench ENGINE --dump-profile --plot profile.png`).

Drawn with Pillow (the `plot` extra: pip install 'tensorkiln[plot]'), imported on use: one horizontal bar per layer
in execution order, its length the layer's median time, labelled with the layer's name, kind, milliseconds and
share of the total; the bars of the slowest layers (together half the time) are drawn in a stronger color.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import TensorkilnError

WIDTH = 1100
ROW = 18
TOP = 40
LABEL_WIDTH = 430
RIGHT_MARGIN = 150
MAX_LABEL = 62
BAR = (70, 130, 180)
HOT_BAR = (214, 96, 77)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def plot_profile(profile: Sequence[dict], path: str | Path, title: str = "per-layer time") -> tuple[int, int]:
    """Draw `profile` (entries with name, kind, median_ms, as `kiln bench --dump-profile` makes them) to the PNG
    `path`; returns the image's (width, height)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise TensorkilnError("--plot draws with Pillow, which is not installed: pip install 'tensorkiln[plot]' "
                              "(or pip install pillow)") from None
    if not profile:
        raise TensorkilnError("the profile has no layers to plot")
    height = TOP + ROW * len(profile) + 30
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    total = sum(entry["median_ms"] for entry in profile)
    longest = max(entry["median_ms"] for entry in profile) or 1.0
    hot = _slowest_half(profile, total)
    draw.text((10, 10), f"{title}: {len(profile)} layers, {total:.4f} ms in all (medians)", fill=TEXT)
    span = WIDTH - LABEL_WIDTH - RIGHT_MARGIN
    for index, entry in enumerate(profile):
        y = TOP + ROW * index
        label = f"{index} {entry['name']} ({entry['kind']})"
        draw.text((10, y + 3), label if len(label) <= MAX_LABEL else label[:MAX_LABEL - 3] + "...", fill=TEXT)
        length = max(1, round(span * entry["median_ms"] / longest))
        draw.rectangle((LABEL_WIDTH, y + 2, LABEL_WIDTH + length, y + ROW - 3), fill=HOT_BAR if index in hot else BAR)
        share = 100 * entry["median_ms"] / total if total else 0.0
        draw.text((LABEL_WIDTH + length + 6, y + 3), f"{entry['median_ms']:.4f} ms {share:.1f}%", fill=TEXT)
    image.save(Path(path), format="PNG")
    return image.size


def _slowest_half(profile: Sequence[dict], total: float) -> set[int]:
    """The indices of the slowest layers that together take half the time."""
    chosen, spent = set(), 0.0
    for index in sorted(range(len(profile)), key=lambda i: -profile[i]["median_ms"]):
        if spent >= total / 2:
            break
        chosen.add(index)
        spent += profile[index]["median_ms"]
    return chosen
