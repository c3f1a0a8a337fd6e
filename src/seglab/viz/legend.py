"""A legend on a picture: a colour swatch and the class name for each class present, in a translucent
box in the top-left corner (largest classes first). The text scales with the picture (PIL's built-in
font, no font files); entries that do not fit in the picture's height go into further columns, and
what fits nowhere is summed up as "+N more"."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]


def classes_present(labels, names: Sequence[str], palette: Sequence[Sequence[int]], *,
                    ignore_index: int | None = 255) -> list[tuple[str, Color]]:
    """(name, colour) of every class in the (H, W) label map, the most frequent first."""
    labels = np.asarray(labels).reshape(-1)
    counts = np.bincount(labels[(labels != ignore_index) & (labels >= 0)] if ignore_index is not None
                         else labels[labels >= 0], minlength=len(names))
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0 and c < len(names)]
    return [(str(names[c]), tuple(int(v) for v in palette[c])) for c in order]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_legend(picture: Image.Image, entries: Sequence[tuple[str, Color]], *, opacity: float = 0.6) -> Image.Image:
    """`picture` with a legend of `entries` ((name, colour) pairs) drawn in its top-left corner."""
    if not entries:
        return picture
    picture = picture.convert("RGB")
    w, h = picture.size
    size = max(9, round(min(w, h) / 30))
    font, pad = _font(size), max(2, size // 4)
    row = size + 2 * pad
    rows = max(1, (h - pad) // row)
    text_w = max(int(ImageDraw.Draw(picture).textlength(name, font=font)) for name, _ in entries)
    col_w = row + text_w + 2 * pad
    cols = max(1, min(-(-len(entries) // rows), (w - pad) // col_w))
    shown = list(entries)
    if len(shown) > rows * cols:
        shown = shown[:rows * cols - 1] + [(f"+{len(entries) - rows * cols + 1} more", None)]
    used_rows = min(rows, len(shown))
    box = (0, 0, min(w, cols * col_w + pad), min(h, used_rows * row + pad))
    shade = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    ImageDraw.Draw(shade).rectangle(box, fill=(0, 0, 0, round(255 * opacity)))
    out = Image.alpha_composite(picture.convert("RGBA"), shade).convert("RGB")
    draw = ImageDraw.Draw(out)
    for i, (name, color) in enumerate(shown):
        x, y = pad + (i // rows) * col_w, pad + (i % rows) * row
        if color is not None:
            draw.rectangle([x, y + pad // 2, x + size, y + pad // 2 + size], fill=color, outline=(255, 255, 255))
        draw.text((x + size + pad, y + pad // 2), name, fill=(255, 255, 255), font=font)
    return out
