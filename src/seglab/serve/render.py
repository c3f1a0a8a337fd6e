"""A prediction as the service answers it: a JSON summary, a label PNG or an overlay PNG, and for the page a
"view map" (one value per pixel) with the legend entries its values refer to.

One renderer per task, built by the task (`Task.build_renderer`, beside `build_writer`), so the service
never asks which task a model has:
- semantic: the classes present with their pixel counts and shares; label PNG = palette PNG (pixel value =
  class index, as `seglab predict` writes); overlay = `seglab.viz.overlay`; view map = class indices;
- joint: the same for one label space (`space=`), with every space's histogram in the JSON;
- instance: the segments scoring >= `score_thresh` (class, score, box, COCO RLE mask, in score order) and a
  histogram of the pixels their classes cover; label PNG = segment index per pixel (0: none, the most
  confident segment on top); overlay = `seglab.viz.draw_instances`; view map = segment indices;
- panoptic: every segment (class, score for things, box, COCO RLE mask) and the class histogram; label PNG
  = the COCO panoptic PNG (id = R + 256 G + 256^2 B); overlay = `seglab.viz.draw_panoptic`.
Nothing here knows about HTTP: bodies are bytes, parameters a dict already checked by the service.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.coco_masks import mask_to_rle
from ..data.palettes import default_palette
from ..structures import SemanticResult
from ..viz import instance_colors


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def histogram(values: np.ndarray, names: Sequence[str], palette: Sequence[Sequence[int]]) -> list[dict]:
    """The classes present in a label map: id, name, colour, pixels, share; most pixels first (ignored or
    unknown values are left out)."""
    counts = np.bincount(values.reshape(-1).astype(np.int64).clip(0), minlength=len(names))[: len(names)]
    total = max(1, values.size)
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return [{"id": i, "name": names[i], "color": [int(v) for v in palette[i]], "pixels": int(counts[i]),
             "share": round(float(counts[i]) / total, 6)} for i in order]


def encode_map(values: np.ndarray, refers_to: str) -> dict:
    """A view map for the page: little-endian uint8 or uint16 values, base64, row-major."""
    dtype = np.uint8 if values.size == 0 or values.max() < 256 else np.dtype("<u2")
    if values.size and values.max() >= 65536:
        raise ValueError(f"view map values must stay below 65536, got {values.max()}")
    return {"width": int(values.shape[1]), "height": int(values.shape[0]), "values": refers_to,
            "dtype": "uint8" if dtype is np.uint8 else "uint16",
            "data": base64.b64encode(np.ascontiguousarray(values.astype(dtype)).tobytes()).decode("ascii")}


def box_of(mask: np.ndarray) -> list[float]:
    """[x0, y0, x1, y1] (exclusive corners, the models' box convention) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


class Renderer:
    """What every renderer answers. `params`: the task's own query parameters (name -> default)."""

    task = "semantic"
    params: Mapping[str, object] = {}
    default_alpha = 0.5

    def parse_param(self, name: str, text: str):
        """The value of the task's query parameter `name` from its text (ValueError when it is wrong)."""
        return text

    def card(self) -> dict:
        """What /models says about the model's output: class names and colours."""
        raise NotImplementedError

    def summary(self, result, params: Mapping) -> dict:
        raise NotImplementedError

    def view(self, result, params: Mapping) -> tuple[np.ndarray, str]:
        """(map of (H, W) values, the JSON key of the entries they refer to)."""
        raise NotImplementedError

    def label_png(self, result, params: Mapping) -> bytes:
        raise NotImplementedError

    def overlay_png(self, image: np.ndarray, result, params: Mapping) -> bytes:
        raise NotImplementedError

    def json(self, result, params: Mapping, *, with_map: bool = False) -> dict:
        out = self.summary(result, params)
        if with_map:
            values, refers_to = self.view(result, params)
            out["map"] = encode_map(values, refers_to)
        return out


class SemanticRenderer(Renderer):
    def __init__(self, classes: Sequence[str], palette: Sequence[Sequence[int]]):
        self.classes, self.palette = list(classes), [tuple(int(v) for v in c) for c in palette]

    def card(self) -> dict:
        return {"classes": self.classes, "palette": [list(c) for c in self.palette]}

    def labels(self, result, params: Mapping) -> np.ndarray:
        return as_numpy(result.labels).astype(np.int64)

    def summary(self, result, params: Mapping) -> dict:
        labels = self.labels(result, params)
        return {"width": int(labels.shape[1]), "height": int(labels.shape[0]),
                "classes": histogram(labels, self.classes, self.palette)}

    def view(self, result, params: Mapping) -> tuple[np.ndarray, str]:
        return self.labels(result, params), "classes"

    def label_png(self, result, params: Mapping) -> bytes:
        from ..viz import label_image

        return png_bytes(label_image(self.labels(result, params), self.palette))

    def overlay_png(self, image: np.ndarray, result, params: Mapping) -> bytes:
        from ..viz import overlay

        alpha = self.default_alpha if params.get("alpha") is None else params["alpha"]
        return png_bytes(overlay(image, self.labels(result, params), self.palette, alpha=alpha))


class JointRenderer(Renderer):
    """A joint model's label spaces; `space` picks the one for the label PNG, the overlay and the view map
    (default: the first); the JSON holds every space's histogram too."""

    task = "joint"

    def __init__(self, spaces: Mapping[str, Sequence[str]], palettes: Mapping[str, Sequence[Sequence[int]]]):
        self.per_space = {s: SemanticRenderer(names, palettes[s]) for s, names in spaces.items()}
        self.params = {"space": next(iter(self.per_space))}

    def parse_param(self, name: str, text: str):
        if name == "space" and text not in self.per_space:
            raise ValueError(f"space must be one of {', '.join(self.per_space)}, got {text!r}")
        return text

    def card(self) -> dict:
        return {"spaces": {s: r.card() for s, r in self.per_space.items()}}

    def pick(self, result, params: Mapping) -> tuple[SemanticRenderer, SemanticResult]:
        return self.per_space[params["space"]], SemanticResult(labels=result[params["space"]])

    def summary(self, result, params: Mapping) -> dict:
        renderer, labels = self.pick(result, params)
        return {**renderer.summary(labels, params), "space": params["space"],
                "spaces": {s: r.summary(SemanticResult(labels=result[s]), params)["classes"]
                           for s, r in self.per_space.items()}}

    def view(self, result, params: Mapping) -> tuple[np.ndarray, str]:
        renderer, labels = self.pick(result, params)
        return renderer.view(labels, params)

    def label_png(self, result, params: Mapping) -> bytes:
        renderer, labels = self.pick(result, params)
        return renderer.label_png(labels, params)

    def overlay_png(self, image: np.ndarray, result, params: Mapping) -> bytes:
        renderer, labels = self.pick(result, params)
        return renderer.overlay_png(image, labels, params)


class InstanceRenderer(Renderer):
    """Segments scoring >= `score_thresh` (default: the model's stored threshold)."""

    task = "instance"
    default_alpha = 0.45

    def __init__(self, classes: Sequence[str], category_ids: Sequence[int], score_thresh: float):
        self.classes, self.category_ids = list(classes), [int(c) for c in category_ids]
        self.params = {"score_thresh": float(score_thresh)}
        self.class_colors = [list(c) for c in instance_colors(len(self.classes))]

    def parse_param(self, name: str, text: str):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"score_thresh must be a number in [0, 1], got {text!r}")
        return value

    def card(self) -> dict:
        return {"classes": self.classes, "palette": self.class_colors, "category_ids": self.category_ids,
                "score_thresh": self.params["score_thresh"]}

    def shown(self, result, params: Mapping) -> list[int]:
        """Detection indices scoring >= score_thresh, most confident first."""
        scores = as_numpy(result.scores).astype(np.float64).reshape(-1)
        return [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= params["score_thresh"]]

    def view(self, result, params: Mapping) -> tuple[np.ndarray, str]:
        masks = as_numpy(result.masks).astype(bool)
        shown = self.shown(result, params)
        h, w = masks.shape[1:] if masks.ndim == 3 else (0, 0)
        values = np.zeros((h, w), np.int64)
        for rank in reversed(range(len(shown))):  # least confident first: the most confident ends on top
            values[masks[shown[rank]]] = rank + 1
        return values, "segments"

    def summary(self, result, params: Mapping) -> dict:
        from ..metrics.instance import instance_results_to_coco

        values, _ = self.view(result, params)
        coco = instance_results_to_coco(0, result, self.category_ids)
        labels = as_numpy(result.labels).astype(np.int64).reshape(-1)
        colors = instance_colors(len(labels))  # the overlay's colours (draw_instances)
        shown = self.shown(result, params)
        counts = np.bincount(values.reshape(-1), minlength=len(shown) + 1)
        total = max(1, values.size)
        segments = []
        for rank, i in enumerate(shown):
            entry = coco[i]
            x, y, bw, bh = entry["bbox"]
            segments.append({"id": rank + 1, "class_id": int(labels[i]), "name": self.classes[int(labels[i])],
                             "category_id": entry["category_id"], "score": round(entry["score"], 6),
                             "color": list(colors[i]), "box": [x, y, x + bw, y + bh], "bbox": entry["bbox"],
                             "area": int(as_numpy(result.masks[i]).sum()), "pixels": int(counts[rank + 1]),
                             "share": round(int(counts[rank + 1]) / total, 6), "segmentation": entry["segmentation"]})
        class_of = np.array([0] + [s["class_id"] for s in segments], np.int64)
        covered = values > 0
        classes = histogram(np.where(covered, class_of[values], -1)[covered], self.classes, self.class_colors)
        for c in classes:
            c["share"] = round(c["pixels"] / total, 6)
            c["count"] = sum(1 for s in segments if s["class_id"] == c["id"])
        return {"width": int(values.shape[1]), "height": int(values.shape[0]), "classes": classes,
                "segments": segments}

    def label_png(self, result, params: Mapping) -> bytes:
        values, _ = self.view(result, params)
        if values.max(initial=0) < 256:
            colors = [(0, 0, 0)] + [instance_colors(len(as_numpy(result.scores).reshape(-1)))[i]
                                    for i in self.shown(result, params)]
            img = Image.fromarray(values.astype(np.uint8))
            img.putpalette(np.array(colors + [(0, 0, 0)] * (256 - len(colors)), np.uint8).reshape(-1).tolist())
            return png_bytes(img)
        return png_bytes(Image.fromarray(values.astype(np.uint16)))  # 16-bit grayscale beyond 255 segments

    def overlay_png(self, image: np.ndarray, result, params: Mapping) -> bytes:
        from ..viz import draw_instances

        alpha = self.default_alpha if params.get("alpha") is None else params["alpha"]
        return png_bytes(draw_instances(image, result, self.classes, params["score_thresh"], alpha=alpha))


class PanopticRenderer(Renderer):
    task = "panoptic"
    default_alpha = 0.6

    def __init__(self, categories: Sequence[dict], class_to_category: Sequence[int]):
        self.categories = [dict(c) for c in categories]
        self.class_to_category = [int(c) for c in class_to_category]
        self.classes = [str(c.get("name", c["id"])) for c in self.categories]
        fallback = default_palette(len(self.categories))
        self.palette = [list(c.get("color", fallback[i])) for i, c in enumerate(self.categories)]

    def card(self) -> dict:
        return {"classes": self.classes, "palette": self.palette, "category_ids": self.class_to_category,
                "things": [bool(int(c.get("isthing", 0))) for c in self.categories]}

    def infos(self, result) -> list[dict]:
        from ..data.panoptic import to_category_ids

        return to_category_ids(list(result.segments_info), self.class_to_category)

    def view(self, result, params: Mapping) -> tuple[np.ndarray, str]:
        return as_numpy(result.segments).astype(np.int64), "segments"

    def summary(self, result, params: Mapping) -> dict:
        from ..viz import panoptic_colors

        ids = as_numpy(result.segments).astype(np.int64)
        total = max(1, ids.size)
        colors = panoptic_colors(self.infos(result), self.categories)
        segments, class_pixels = [], np.zeros(len(self.classes), np.int64)
        for info in sorted(result.segments_info, key=lambda s: -int(s.get("area", 0))):
            mask = ids == int(info["id"])
            pixels = int(mask.sum())
            if pixels == 0:
                continue
            c = int(info["category_id"])
            class_pixels[c] += pixels
            entry = {"id": int(info["id"]), "class_id": c, "name": self.classes[c],
                     "category_id": self.class_to_category[c], "isthing": bool(info.get("isthing", False)),
                     "color": list(colors[int(info["id"])]), "box": box_of(mask), "area": pixels, "pixels": pixels,
                     "share": round(pixels / total, 6), "segmentation": mask_to_rle(mask)}
            x0, y0, x1, y1 = entry["box"]
            entry["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            if "score" in info:
                entry["score"] = round(float(info["score"]), 6)
            segments.append(entry)
        order = [int(i) for i in np.argsort(-class_pixels, kind="stable") if class_pixels[i] > 0]
        classes = [{"id": i, "name": self.classes[i], "color": self.palette[i], "pixels": int(class_pixels[i]),
                    "share": round(int(class_pixels[i]) / total, 6),
                    "count": sum(1 for s in segments if s["class_id"] == i)} for i in order]
        return {"width": int(ids.shape[1]), "height": int(ids.shape[0]), "classes": classes, "segments": segments}

    def label_png(self, result, params: Mapping) -> bytes:
        from ..data.panoptic import id2rgb

        return png_bytes(Image.fromarray(id2rgb(as_numpy(result.segments).astype(np.int64)).astype(np.uint8)))

    def overlay_png(self, image: np.ndarray, result, params: Mapping) -> bytes:
        from ..viz import draw_panoptic

        alpha = self.default_alpha if params.get("alpha") is None else params["alpha"]
        return png_bytes(draw_panoptic(image, as_numpy(result.segments).astype(np.int64), self.infos(result),
                                       self.categories, alpha))
