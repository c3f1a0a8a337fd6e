"""A deterministic synthetic "stuff and things" data set for semantic, instance and panoptic work.

Stuff and things as defined by Kirillov, He, Girshick, Rother, Dollar, "Panoptic Segmentation",
CVPR 2019 (Sec. 3): amorphous textured regions (stuff) cover the background, countable shapes
(things) lie on top, each with its own instance id. The panoptic files follow the COCO panoptic format
of that paper's release (Lin et al., "Microsoft COCO", ECCV 2014; panopticapi): a PNG with segment id
= R + 256 G + 256^2 B and a JSON with `segments_info` per image.

Classes (index: name): 0 grass, 1 water, 2 sand (stuff); 3 circle, 4 rectangle, 5 triangle (things).
Cues are local but not trivial: every stuff class has its own colour statistics and texture (grass:
green with vertical streak noise; water: blue with horizontal waves; sand: pale beige with blotches and
dark speckles), every thing class its own hue band (circle red, rectangle magenta, triangle yellow)
with varied saturation, brightness and shading, varied sizes and rotations and occlusions, and the
whole image gets a random brightness and pixel noise. Every pixel has a class (no ignore pixels).

Layout written by `generate_synthetic(root)` (every file written atomically, `meta.json` last):
    train.txt, val.txt                  `images/<name>.png labels/<name>.png` lines
    images/<name>.png                   RGB image; <name> is <split>_<index:05d> (train_00000, val_00000)
    labels/<name>.png                   palette PNG, class index per pixel
    instances/<name>.png                16-bit PNG, instance id per pixel (1..K, 0 = no instance)
    panoptic/<name>.png                 RGB PNG, segment id = R + 256 G + 256^2 B (0 = void, unused);
                                        segment id = (category_id + 1) * 1000 + instance id (0 for stuff)
    panoptic_<split>.json               COCO panoptic: images, annotations (segments_info: id,
                                        category_id, iscrowd, isthing, area, bbox [x, y, w, h]), categories
    meta.json                           classes, palette, thing ids, generator arguments
Each image is drawn from its own generator seeded by (seed, split, index): the same seed gives
byte-identical files, and the first N images do not depend on how many are generated.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SeglabError
from ..utils.io import save_image_atomic, write_text_atomic
from .palettes import palette_array

SYNTHETIC_CLASSES = ["grass", "water", "sand", "circle", "rectangle", "triangle"]
SYNTHETIC_PALETTE = [(70, 150, 60), (40, 90, 190), (210, 190, 140), (220, 40, 40), (200, 50, 200),
                     (240, 220, 40)]
SYNTHETIC_STUFF_IDS = (0, 1, 2)
SYNTHETIC_THING_IDS = (3, 4, 5)
SYNTHETIC_THING_CLASSES = [SYNTHETIC_CLASSES[i] for i in SYNTHETIC_THING_IDS]
SEGMENT_ID_STRIDE = 1000  # panoptic segment id = (category_id + 1) * 1000 + instance id
_SPLIT_CODES = {"train": 0, "val": 1}
# Thing hue bands (degrees, +-): circle red, rectangle magenta, triangle yellow.
_THING_HUES = {3: (0.0, 10.0), 4: (295.0, 12.0), 5: (60.0, 6.0)}


def _smooth_field(rng: np.random.Generator, n: int, grid: int, h: int, w: int) -> np.ndarray:
    """`n` smooth random fields (n, h, w): a (grid x grid) uniform grid, bilinearly upsampled."""
    g = rng.random((n, grid, grid)).astype(np.float32)
    ys, xs = np.linspace(0, grid - 1, h), np.linspace(0, grid - 1, w)
    i0 = np.minimum(ys.astype(int), grid - 2)
    j0 = np.minimum(xs.astype(int), grid - 2)
    wy = (ys - i0).astype(np.float32)[None, :, None]
    wx = (xs - j0).astype(np.float32)
    rows = g[:, i0] * (1 - wy) + g[:, i0 + 1] * wy  # (n, h, grid), separable: rows, then columns
    return rows[:, :, j0] * (1 - wx) + rows[:, :, j0 + 1] * wx


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return (np.array(rgb) + (v - c)) * 255.0


def _stuff(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Irregular stuff regions (argmax of smooth random fields) and their textured colours."""
    fields = _smooth_field(rng, 3, 4, h, w) + 0.35 * _smooth_field(rng, 3, 9, h, w)
    fields += rng.normal(0.0, 0.15, size=(3, 1, 1))
    label = fields.argmax(0).astype(np.uint8)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    # grass: vertically correlated streak noise
    n = rng.standard_normal(size=(h + 2, w), dtype=np.float32)
    grass = (n[:-2] + n[1:-1] + n[2:]) * np.float32(24 / np.sqrt(3))
    # water: horizontal waves with a random period, phase and wobble
    period, wobble = rng.uniform(5, 9), rng.uniform(6, 14)
    phase = 2 * np.pi * (yy / period + 0.2 * np.sin(2 * np.pi * xx / (wobble * period))) + rng.uniform(0, 2 * np.pi)
    water = 22 * np.sin(phase.astype(np.float32))
    # sand: low-frequency blotches and sparse dark speckles
    blotch = 30 * (_smooth_field(rng, 1, 12, h, w)[0] - 0.5)
    sand = (blotch - 50.0 * (rng.random((h, w)) < 0.06)).astype(np.float32)
    # per-image base colours (jittered) and per-class channel weights of the texture
    base = np.array([[70, 150, 60], [40, 90, 190], [210, 190, 140]], np.float32)
    base += rng.normal(0, [[10], [10], [8]], size=(3, 3)).astype(np.float32)
    weights = np.array([[0.6, 1.0, 0.5], [0.7, 0.8, 1.0], [1.0, 1.0, 1.0]], np.float32)
    texture = np.choose(label, [grass, water, sand])
    image = base[label] + texture[..., None] * weights[label]
    return label, image


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int) -> tuple[np.ndarray, float, float]:
    """A boolean mask of one randomly placed, sized and rotated shape of thing class `cls`."""
    r = rng.uniform(0.07, 0.2) * min(h, w)
    cy, cx = rng.uniform(0.05, 0.95) * h, rng.uniform(0.05, 0.95) * w
    y = np.arange(h, dtype=np.float64)[:, None] - cy
    x = np.arange(w, dtype=np.float64)[None, :] - cx
    if cls == 3:  # circle
        return x * x + y * y <= r * r, cy, cx
    t = rng.uniform(0, np.pi)
    if cls == 4:  # rotated rectangle
        a, b = r * rng.uniform(0.6, 1.0), r * rng.uniform(0.35, 0.9)
        u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        return (np.abs(u) <= a) & (np.abs(v) <= b), cy, cx
    # triangle: three vertices around the centre, jittered angles and radii; inside = same side of all edges
    angles = t + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
    radii = r * rng.uniform(1.0, 1.3, 3)
    px, py = radii * np.cos(angles), radii * np.sin(angles)
    inside = np.ones((h, w), dtype=bool)
    for k in range(3):
        x0, y0, x1, y1 = px[k], py[k], px[(k + 1) % 3], py[(k + 1) % 3]
        inside &= (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0
    return inside, cy, cx


def render_sample(rng: np.random.Generator, h: int, w: int) -> dict:
    """One sample: image (h, w, 3) uint8, label (h, w) uint8, instances (h, w) int32, instance_classes."""
    label, image = _stuff(rng, h, w)
    n = int(rng.integers(3, 8))
    inst = np.zeros((h, w), dtype=np.int32)
    classes, drawn = np.zeros(n + 1, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    colors, grads = np.zeros((n + 1, 3)), np.zeros((n + 1, 4))
    for k in range(1, n + 1):
        cls = int(rng.choice(SYNTHETIC_THING_IDS))
        mask, cy, cx = _shape_mask(rng, cls, h, w)
        hue, spread = _THING_HUES[cls]
        hue += rng.uniform(-spread, spread)
        colors[k] = _hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.65, 1.0))
        grads[k] = (*rng.uniform(-1.2, 1.2, 2), cy, cx)  # shading slope (per pixel) and its centre
        classes[k], drawn[k] = cls, int(mask.sum())
        inst[mask] = k
    # drop instances hidden behind later ones (visible < 25% of the shape or < 20 pixels)
    visible = np.bincount(inst.ravel(), minlength=n + 1)
    keep = (visible >= 20) & (visible >= 0.25 * drawn)
    keep[0] = False
    remap = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
    inst = remap[inst]
    old_ids = np.flatnonzero(keep)
    old = np.concatenate([[0], old_ids])[inst]
    on = inst > 0
    ys, xs = np.nonzero(on)
    k = old[ys, xs]
    shade = grads[k, 0] * (ys - grads[k, 2]) + grads[k, 1] * (xs - grads[k, 3])
    image[ys, xs] = colors[k] + shade[:, None]
    label = np.where(on, classes[old], label).astype(np.uint8)
    image = image * np.float32(rng.uniform(0.85, 1.15))
    image += 6 * rng.standard_normal(size=image.shape, dtype=np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return {"image": image, "label": label, "instances": inst, "instance_classes": classes[old_ids]}


def panoptic_segments(label: np.ndarray, inst: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Segment id map (id = (category + 1) * 1000 + instance, instance 0 for stuff) and segments_info."""
    seg = (label.astype(np.int64) + 1) * SEGMENT_ID_STRIDE + inst
    ids, areas = np.unique(seg, return_counts=True)
    infos = []
    for sid, area in zip(ids.tolist(), areas.tolist()):
        m = seg == sid
        ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        cat = sid // SEGMENT_ID_STRIDE - 1
        infos.append({"id": sid, "category_id": cat, "iscrowd": 0, "isthing": int(cat in SYNTHETIC_THING_IDS),
                      "area": area, "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1),
                                             int(ys[-1] - ys[0] + 1)]})
    return seg, infos


def encode_panoptic(seg: np.ndarray) -> np.ndarray:
    """Segment ids -> RGB uint8 with id = R + 256 G + 256^2 B."""
    return np.stack([seg % 256, (seg // 256) % 256, (seg // 65536) % 256], -1).astype(np.uint8)


def decode_panoptic(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def synthetic_categories() -> list[dict]:
    return [{"id": i, "name": n, "isthing": int(i in SYNTHETIC_THING_IDS), "color": list(SYNTHETIC_PALETTE[i]),
             "supercategory": "shape" if i in SYNTHETIC_THING_IDS else "texture"}
            for i, n in enumerate(SYNTHETIC_CLASSES)]


def _write_sample(root: Path, split: str, index: int, seed: int, h: int, w: int) -> dict:
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    s = render_sample(rng, h, w)
    name = f"{split}_{index:05d}.png"
    save_image_atomic(root / "images" / name, Image.fromarray(s["image"], "RGB"), durable=False)
    lbl = Image.fromarray(s["label"], "P")
    lbl.putpalette(palette_array(SYNTHETIC_PALETTE).ravel().tolist())
    save_image_atomic(root / "labels" / name, lbl, durable=False)
    save_image_atomic(root / "instances" / name, Image.fromarray(s["instances"].astype(np.uint16)), durable=False)
    seg, infos = panoptic_segments(s["label"], s["instances"])
    save_image_atomic(root / "panoptic" / name, Image.fromarray(encode_panoptic(seg), "RGB"), durable=False)
    return {"image": {"id": index, "file_name": f"images/{name}", "height": h, "width": w},
            "annotation": {"image_id": index, "file_name": f"panoptic/{name}", "segments_info": infos}}


def generate_synthetic(root: str | os.PathLike, *, num_train: int = 160, num_val: int = 40,
                       size: tuple[int, int] = (128, 128), seed: int = 0, workers: int = 2) -> Path:
    """Write the synthetic data set under `root` (see the module docstring) and return `root`.

    The defaults are the demo set: 160 train + 40 val images of 128x128 (1-3 s on 2 cores).
    `workers` threads encode PNGs in parallel; the output does not depend on it.
    """
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(v) for v in size)
    if min(h, w) < 16:
        raise SeglabError(f"generate_synthetic: size must be at least 16x16, got {h}x{w}")
    if num_train < 1 or num_val < 0:
        raise SeglabError(f"generate_synthetic: need num_train >= 1 and num_val >= 0, got {num_train}, {num_val}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").unlink(missing_ok=True)  # present only once a generation has completed
    jobs = [(split, i) for split, count in (("train", num_train), ("val", num_val)) for i in range(count)]
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        results = list(pool.map(lambda j: _write_sample(root, j[0], j[1], seed, h, w), jobs))
    by_split: dict[str, list[dict]] = {"train": [], "val": []}
    for (split, _), res in zip(jobs, results):
        by_split[split].append(res)
    cats = synthetic_categories()
    for split, items in by_split.items():
        names = [it["image"]["file_name"].split("/")[-1] for it in items]
        write_text_atomic(root / f"{split}.txt", "".join(f"images/{n} labels/{n}\n" for n in names), durable=False)
        coco = {"images": [it["image"] for it in items], "annotations": [it["annotation"] for it in items],
                "categories": cats}
        write_text_atomic(root / f"panoptic_{split}.json", json.dumps(coco) + "\n", durable=False)
    meta = {"format": "seglab-synthetic-v1", "classes": SYNTHETIC_CLASSES,
            "palette": [list(c) for c in SYNTHETIC_PALETTE], "thing_ids": list(SYNTHETIC_THING_IDS),
            "stuff_ids": list(SYNTHETIC_STUFF_IDS), "num_train": num_train, "num_val": num_val,
            "size": [h, w], "seed": seed, "segment_id": "(category_id + 1) * 1000 + instance_id"}
    # The files above skip one fsync each (hundreds of them); one sync makes them durable before meta.json,
    # the mark of a complete set, is written (itself durably).
    if hasattr(os, "sync"):
        os.sync()
    write_text_atomic(root / "meta.json", json.dumps(meta, indent=2) + "\n")
    return root
