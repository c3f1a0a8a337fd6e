"""Bringing one's own images and masks into the `folder` layout (`seglab data convert`).

    <out>/images/<split>/<name>.<ext>     the images, copied as they are
    <out>/labels/<split>/<name>.png       8-bit palette PNGs whose pixel values are class indices
    <out>/classes.txt                     one class per line: `name r g b` (its colour)

- Colour-coded RGB masks become index PNGs through a palette: a built-in data set's (`camvid`, `voc`,
  `cityscapes`, `ade20k`) or a file of `name r g b` lines. A colour outside the palette is an error
  naming the file and the colours, unless `unknown="ignore"` maps it to the ignore index 255.
- Single-channel masks (grayscale or palette PNGs) keep their values; they are rewritten as palette
  PNGs so that they show in colour.
- Instance-id PNGs (0 = background, k > 0 = object k) become COCO instance annotations
  (`convert_instance_masks`, `seglab data convert --instances`) in the layout `coco_instances` reads.
- A flat folder (`images/` + `labels/` or `masks/`, no split subfolders) is split into train and val:
  `split=0.8` puts a random 80% of the names (`seed` fixes the draw) into train. A folder that already
  has `images/<split>/` subfolders keeps its splits.
"""
from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, SeglabError
from ..utils.io import atomic_path, staged_folder, write_json_atomic, write_text_atomic
from . import palettes
from .datasets.folder import IGNORE_INDEX, IMAGE_EXTENSIONS, check_dir, parse_classes_file
from .io import image_size, open_image, read_image, read_label

Color = tuple[int, int, int]
# data sets whose palette `--palette NAME` names
KNOWN_PALETTES = {"camvid": (palettes.CAMVID_CLASSES, palettes.CAMVID_PALETTE),
                  "voc": (palettes.VOC_CLASSES, palettes.VOC_PALETTE),
                  "cityscapes": (palettes.CITYSCAPES_CLASSES, palettes.CITYSCAPES_PALETTE),
                  "ade20k": (palettes.ADE20K_CLASSES, palettes.ADE20K_PALETTE)}
MASK_FOLDERS = ("labels", "masks", "annotations")


def load_palette(spec: str) -> tuple[list[str], list[Color]]:
    """A built-in data set's (classes, palette) by name, or a `name r g b` file."""
    if spec in KNOWN_PALETTES:
        classes, pal = KNOWN_PALETTES[spec]
        return list(classes), [tuple(c) for c in pal]
    p = Path(spec)
    if not p.is_file():
        raise SeglabError(f"--palette {spec}: neither a data set ({', '.join(KNOWN_PALETTES)}) nor a file of "
                          f"`name r g b` lines")
    classes, colours = parse_classes_file(p)
    if colours is None:
        raise DataError(f"{p}: a palette file needs `name r g b` on every line")
    return classes, colours


def rgb_to_index(rgb: np.ndarray, palette: Sequence[Color], *, unknown: str = "error",
                 source: str = "mask") -> np.ndarray:
    """H x W x 3 colours -> H x W uint8 class indices through `palette` (colour i -> class i); colours
    outside it raise `DataError` naming `source` (or become 255 with unknown="ignore")."""
    rgb = np.asarray(rgb)[..., :3].astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(palette)}
    values, inverse = np.unique(codes, return_inverse=True)
    mapped = np.array([lut.get(int(v), IGNORE_INDEX) for v in values], dtype=np.uint8)
    missing = [int(v) for v in values if int(v) not in lut]
    if missing and unknown != "ignore":
        shown = ", ".join(str(((v >> 16) & 255, (v >> 8) & 255, v & 255)) for v in missing[:5])
        raise DataError(f"{source}: colours not in the palette: {shown}{' ...' if len(missing) > 5 else ''}; "
                        f"add them to the palette file or pass --unknown ignore (they become {IGNORE_INDEX})")
    return mapped[inverse.reshape(codes.shape)]


def split_names(names: Sequence[str], fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """{'train': a random `fraction` of the names (at least one), 'val': the rest (at least one)}."""
    if not 0 < fraction < 1:
        raise SeglabError(f"--split must be a fraction between 0 and 1 (for train), got {fraction}")
    if len(names) < 2:
        raise SeglabError(f"cannot split {len(names)} image(s) into train and val")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    k = min(max(1, round(fraction * len(order))), len(order) - 1)
    return {"train": sorted(order[:k]), "val": sorted(order[k:])}


def _images(folder: Path) -> dict[str, Path]:
    return {f.stem: f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS}


def _find_masks(src: Path, masks: str | None) -> Path:
    if masks is not None:
        return check_dir(src / masks, "mask folder")
    for name in MASK_FOLDERS:
        if (src / name).is_dir():
            return src / name
    raise DataError(f"{src}: no mask folder ({', '.join(MASK_FOLDERS)}); name it with --masks")


def convert_folder(src, out, *, images: str = "images", masks: str | None = None, mask_suffix: str = "",
                   palette: str | None = None, classes: list[str] | None = None, split: float | None = None,
                   seed: int = 0, unknown: str = "error", log=print) -> dict[str, int]:
    """Write `src`'s images and masks in the folder layout under `out` (module docstring). Returns the
    number of pairs per split."""
    src, out = Path(src), Path(out)
    plan = _plan(src, out, images, masks, split, seed)
    names, colours = load_palette(palette) if palette else (None, None)
    if classes is not None and names is not None and len(classes) != len(names):
        raise SeglabError(f"--classes names {len(classes)} classes, --palette {palette} has {len(names)} colours")
    classes = classes if classes is not None else names
    if _inside(out.resolve(), src.resolve()):
        raise SeglabError(f"--out {out}: lies inside the source folder {src}; choose a folder outside it")
    # everything is written into a hidden folder renamed onto `out` at the end: a bad mask half-way
    # (a colour outside the palette, a size mismatch) leaves no half-converted data set
    with staged_folder(out, "--out folder") as stage:
        counts = _convert(plan, stage, out, colours, classes, mask_suffix, unknown, log)
    return counts


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _convert(plan, out: Path, final: Path, colours, classes, mask_suffix: str, unknown: str, log) -> dict[str, int]:
    """Write the planned pairs into `out` (the staging folder); log lines name `final`."""
    counts: dict[str, int] = {}
    max_value, has_ignore = 0, False
    for split_name, (img_dir, mask_dir, names) in plan.items():
        found = _images(img_dir)
        for name in names:
            mask_path = mask_dir / f"{name}{mask_suffix}.png"
            if not mask_path.is_file():
                raise DataError(f"{mask_path}: mask not found (for image {found[name]}); masks are matched by "
                                f"name{f' + {mask_suffix!r}' if mask_suffix else ''} (--mask-suffix)")
            labels = _read_mask(mask_path, colours, unknown)
            if labels.shape != (found_hw := _hw(found[name])):
                raise DataError(f"{found[name]} and {mask_path} differ in size: {found_hw[1]}x{found_hw[0]} vs "
                                f"{labels.shape[1]}x{labels.shape[0]}")
            max_value = max(max_value, int(labels[labels != IGNORE_INDEX].max(initial=0)))
            has_ignore = has_ignore or bool((labels == IGNORE_INDEX).any())
            _copy(found[name], out / "images" / split_name / found[name].name)
            _save_labels(out / "labels" / split_name / f"{name}.png", labels, colours)
        counts[split_name] = len(names)
        log(f"{split_name}: {len(names)} image/label pairs -> {final / 'images' / split_name}, {final / 'labels' / split_name}")
    if classes is not None:
        colours = colours or palettes.default_palette(len(classes))
        write_text_atomic(out / "classes.txt", "".join(f"{c} {r} {g} {b}\n" for c, (r, g, b) in zip(classes, colours)))
        log(f"classes.txt: {len(classes)} classes ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})")
        if max_value >= len(classes):
            log(f"note: the masks hold values up to {max_value}, more than the {len(classes)} classes: map them with "
                f"data.kwargs.label_map (seglab data check shows them)")
    else:
        log(f"no classes.txt written: write {final / 'classes.txt'} with one class name per line "
            f"(labels hold values up to {max_value}), or pass data.kwargs.classes")
    if has_ignore and max_value == 0:
        log("note: the masks hold only 0 and 255, and 255 is the ignore index: binary masks train with "
            "data.kwargs.label_map={255: 1} (seglab train refuses them without it)")
    return counts


def _plan(src: Path, out: Path, images: str, masks: str | None, split: float | None,
          seed: int) -> dict[str, tuple[Path, Path, list[str]]]:
    """{split: (image folder, mask folder, image names)}: a split folder's own splits, or a flat folder's
    names drawn into train and val."""
    image_root, mask_root = check_dir(src / images, "image folder"), _find_masks(src, masks)
    if out.resolve() == src.resolve():
        raise SeglabError(f"--out {out}: must differ from the source folder")
    subdirs = sorted(d.name for d in image_root.iterdir() if d.is_dir())
    if subdirs and not _images(image_root):  # already split
        if split is not None:
            raise SeglabError(f"{image_root}: already split into {', '.join(subdirs)}; leave out --split")
        return {s: (image_root / s, mask_root / s, sorted(_images(image_root / s))) for s in subdirs}
    if split is None:
        raise SeglabError(f"{image_root}: a flat folder (no train/val subfolders); pass --split 0.8 to put "
                          f"80% of the images into train and the rest into val")
    return {s: (image_root, mask_root, ns) for s, ns in split_names(list(_images(image_root)), split, seed).items()}


def convert_instance_masks(src, out, *, images: str = "images", masks: str | None = None, mask_suffix: str = "",
                           class_name: str = "object", split: float | None = None, seed: int = 0,
                           year: str = "2017", log=print) -> dict[str, int]:
    """Instance-id PNGs (0 = background, each value k > 0 = object k of its image, one class) to the COCO
    layout `coco_instances` reads with `data.root` alone: `<out>/<split><year>/` (the images, copied) and
    `<out>/annotations/instances_<split><year>.json` (one annotation per object: compressed RLE, bbox, area).
    Returns the number of images per split."""
    from .coco_masks import mask_to_rle

    src, out = Path(src), Path(out)
    plan = _plan(src, out, images, masks, split, seed)
    counts: dict[str, int] = {}
    binary = True  # every mask holds only 0 and 255: semantic masks, not instance ids
    for split_name, (img_dir, mask_dir, names) in plan.items():
        found = _images(img_dir)
        coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": class_name, "supercategory": class_name}]}
        for image_id, name in enumerate(names, start=1):
            mask_path = mask_dir / f"{name}{mask_suffix}.png"
            if not mask_path.is_file():
                raise DataError(f"{mask_path}: mask not found (for image {found[name]}); masks are matched by "
                                f"name{f' + {mask_suffix!r}' if mask_suffix else ''} (--mask-suffix)")
            if _mode(mask_path) in ("RGB", "RGBA"):
                raise DataError(f"{mask_path}: an RGB mask; instance masks hold one object id per pixel "
                                f"(0 = background) in a single-channel PNG")
            ids = read_label(mask_path)
            h, w = _hw(found[name])
            if ids.shape != (h, w):
                raise DataError(f"{found[name]} and {mask_path} differ in size: {w}x{h} vs {ids.shape[1]}x{ids.shape[0]}")
            binary = binary and set(np.unique(ids).tolist()) <= {0, IGNORE_INDEX}
            coco["images"].append({"id": image_id, "file_name": found[name].name, "width": w, "height": h})
            for k in np.unique(ids[ids > 0]).tolist():
                m = ids == k
                ys, xs = np.nonzero(m)
                x0, y0 = int(xs.min()), int(ys.min())
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                    "segmentation": mask_to_rle(m), "area": int(m.sum()),
                    "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]})
            _copy(found[name], out / f"{split_name}{year}" / found[name].name)
        write_json_atomic(out / "annotations" / f"instances_{split_name}{year}.json", coco)
        counts[split_name] = len(names)
        log(f"{split_name}: {len(names)} images, {len(coco['annotations'])} {class_name} instances -> "
            f"{out / f'{split_name}{year}'}, {out / 'annotations' / f'instances_{split_name}{year}.json'}")
    if binary:
        log("note: every mask holds only 0 and 255, so each image became one object (all its foreground); "
            "instance masks give each object its own value 1, 2, ... (binary masks suit semantic training: "
            "leave out --instances)")
    return counts


def _hw(path: Path) -> tuple[int, int]:
    w, h = image_size(path)
    return h, w


def _read_mask(path: Path, colours: list[Color] | None, unknown: str) -> np.ndarray:
    mode = _mode(path)
    if mode in ("RGB", "RGBA"):
        if colours is None:
            raise DataError(f"{path}: colour-coded RGB mask; pass --palette (camvid, voc, cityscapes, ade20k or a "
                            f"file of `name r g b` lines) to map colours to class indices")
        rgb = read_image(path, 3 if mode == "RGB" else 4)
        return rgb_to_index(rgb, colours, unknown=unknown, source=str(path))
    labels = read_label(path)
    if labels.max(initial=0) > 255 or labels.min(initial=0) < 0:
        raise DataError(f"{path}: values outside 0..255 do not fit an 8-bit label PNG")
    return labels.astype(np.uint8)


def _mode(path: Path) -> str:
    with open_image(path, "mask", decode=False) as img:  # the header only, checked against the pixel limit
        return img.mode


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _save_labels(path: Path, labels: np.ndarray, colours: list[Color] | None) -> None:
    from ..viz.colorize import save_label_png

    n = int(labels[labels != IGNORE_INDEX].max(initial=0)) + 1
    save_label_png(path, labels, colours or palettes.default_palette(max(n, 2)))


__all__ = ["convert_folder", "convert_instance_masks", "rgb_to_index", "split_names", "load_palette", "parse_classes_file", "KNOWN_PALETTES"]

