"""COCO segmentation formats <-> boolean masks: polygons, uncompressed RLE and compressed RLE.

The formats are those of the COCO data set and its API (Lin et al., "Microsoft COCO: Common Objects
in Context", ECCV 2014; pycocotools `mask.py` / `maskApi.c`):
- polygons `[[x0, y0, x1, y1, ...], ...]` in pixel coordinates, one list per part; the parts are
  united (`frPyObjects` + `merge`);
- uncompressed RLE `{"size": [h, w], "counts": [n0, n1, ...]}`: run lengths over the column-major
  (Fortran order) pixels, starting with a run of zeros (which may be 0 long);
- compressed RLE: the same runs as a string, each run stored as its difference to the run two
  before (from the fourth on), in a LEB128-like code of 5 bits per character, characters 48..111.

pycocotools is used when it is installed (`backend="auto"`); otherwise the numpy code below gives the
same masks: the polygon rasteriser is a vectorised port of `maskApi.c`'s `rleFrPoly` (the boundary is
traced at 5x resolution and each column toggles at the boundary crossings), not a generic polygon
fill, because fills such as PIL's `ImageDraw.polygon` also set the pixels the outline passes through
and so disagree with the reference along every edge. Errors in the input raise `ValueError`; the
data sets turn them into `DataError`s naming the file and the annotation.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

Backend = str  # "auto" (pycocotools when installed), "pycocotools" or "numpy"
_POLYGON_SCALE = 5.0  # rleFrPoly traces the outline on a 5x finer grid
_C_INT_MIN = -(2**31)  # what C's (int) cast gives for NaN on x86-64 (zero-length polygon edges)


def pycocotools_mask():
    """`pycocotools.mask`, or None when pycocotools is not installed."""
    try:
        from pycocotools import mask
    except ImportError:
        return None
    return mask


def _backend(backend: Backend):
    if backend not in ("auto", "pycocotools", "numpy"):
        raise ValueError(f"backend must be 'auto', 'pycocotools' or 'numpy', got {backend!r}")
    if backend == "numpy":
        return None
    mask_api = pycocotools_mask()
    if mask_api is None and backend == "pycocotools":
        raise ImportError("backend='pycocotools' needs pycocotools: pip install pycocotools")
    return mask_api


def _decode(mask_api, rle: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools 2.0.8 under numpy 2 warns about `copy=False` on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_api.decode(rle).astype(bool)


# ---------------------------------------------------------------------------------------- run lengths
def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a (H, W) mask over its column-major pixels, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0] + runs if flat[0] else runs


def counts_to_mask(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """The (H, W) bool mask of column-major run lengths (zeros first)."""
    try:
        counts = np.asarray(counts, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("RLE counts must be a flat list of non-negative run lengths") from None
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("RLE counts must be a flat list of non-negative run lengths")
    if int(counts.sum()) != height * width:
        raise ValueError(f"RLE counts sum to {int(counts.sum())} pixels but its size {height}x{width} "
                         f"has {height * width}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T.copy()


def counts_to_string(counts: Sequence[int]) -> str:
    """Compressed RLE string of run lengths (maskApi.c `rleToString`)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as for C's signed long
            more = x != -1 if ch & 0x10 else x != 0
            out.append(chr(ch + 48 + (0x20 if more else 0)))
    return "".join(out)


def string_to_counts(s: str | bytes) -> list[int]:
    """Run lengths of a compressed RLE string (maskApi.c `rleFrString`)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("compressed RLE string ends in the middle of a run")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"compressed RLE string has an invalid character {s[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign extension
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


# ---------------------------------------------------------------------------------------- polygons
def _trunc_int(x: np.ndarray) -> np.ndarray:
    """C's (int) cast of doubles: towards zero, NaN -> INT_MIN."""
    out = np.full(x.shape, _C_INT_MIN, dtype=np.int64)
    ok = ~np.isnan(x)
    out[ok] = np.trunc(x[ok]).astype(np.int64)
    return out


def _polygon_toggles(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    """Column-major pixel indices where one polygon's mask toggles (maskApi.c `rleFrPoly`, vectorised)."""
    x = _trunc_int(_POLYGON_SCALE * xy[0::2] + 0.5)
    y = _trunc_int(_POLYGON_SCALE * xy[1::2] + 0.5)
    xe, ye = np.roll(x, -1), np.roll(y, -1)  # each edge runs from vertex j to j + 1 (closing edge last)
    dx, dy = np.abs(xe - x), np.abs(y - ye)
    along_x = dx >= dy
    flip = (along_x & (x > xe)) | (~along_x & (y > ye))
    xs, xe = np.where(flip, xe, x), np.where(flip, x, xe)
    ys, ye = np.where(flip, ye, y), np.where(flip, y, ye)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(along_x, (ye - ys) / dx, (xe - xs) / dy)  # 0/0 = NaN for a zero-length edge
    steps = np.where(along_x, dx, dy)
    edge = np.repeat(np.arange(len(x)), steps + 1)  # every edge gives steps + 1 points, ends included
    d = np.arange(edge.size) - np.repeat(np.cumsum(steps + 1) - (steps + 1), steps + 1)
    t = np.where(flip[edge], steps[edge] - d, d)
    with np.errstate(invalid="ignore"):
        along = _trunc_int(np.where(along_x[edge], ys[edge], xs[edge]) + slope[edge] * t + 0.5)
    u = np.where(along_x[edge], t + xs[edge], along)
    v = np.where(along_x[edge], along, t + ys[edge])
    # where the traced outline crosses a pixel column, the column toggles at the first row below it
    changed = u[1:] != u[:-1]
    xd = (np.where(u[1:] < u[:-1], u[1:], u[1:] - 1) + 0.5) / _POLYGON_SCALE - 0.5
    keep = changed & (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = (np.minimum(v[1:], v[:-1]) + 0.5) / _POLYGON_SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    return xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64)


def _polygon_mask_numpy(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    toggles = np.bincount(_polygon_toggles(xy, h, w), minlength=h * w + 1)[: h * w]
    return (np.cumsum(toggles) % 2 == 1).reshape(w, h).T


def check_polygons(polygons: Any) -> list[np.ndarray]:
    """The parts of a COCO polygon list as float arrays; ValueError for an empty list, an odd or
    non-finite coordinate list, or a part with fewer than 3 points (an empty polygon)."""
    if not isinstance(polygons, (list, tuple)) or len(polygons) == 0:
        raise ValueError("empty polygon list")
    parts = []
    for poly in polygons:
        if not isinstance(poly, (list, tuple)):
            raise ValueError("segmentation must be a list of polygons [[x0, y0, x1, y1, ...], ...] (or an RLE "
                             f"dict), got a list holding {type(poly).__name__} {str(poly)[:40]}")
        try:
            xy = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError):
            xy = np.full(1, np.nan)
        if xy.ndim != 1 or xy.size % 2 or not np.isfinite(xy).all():
            raise ValueError(f"a polygon must be a flat list [x0, y0, x1, y1, ...] of finite numbers, "
                             f"got {str(poly)[:60]}")
        if xy.size < 6:
            raise ValueError(f"empty polygon: {xy.size // 2} point(s), expected at least 3")
        parts.append(xy)
    return parts


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int, *,
                     backend: Backend = "auto") -> np.ndarray:
    """The (H, W) bool union of COCO polygons, rasterised as pycocotools does."""
    parts = check_polygons(polygons)
    mask_api = _backend(backend)
    if mask_api is not None:
        rles = mask_api.frPyObjects([p.tolist() for p in parts], height, width)
        return _decode(mask_api, mask_api.merge(rles))
    out = np.zeros((height, width), dtype=bool)
    for xy in parts:
        out |= _polygon_mask_numpy(xy, height, width)
    return out


# ---------------------------------------------------------------------------------------- RLE
def rle_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError("an RLE must be a dict with 'size' [h, w] and 'counts'")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size):
        raise ValueError(f"RLE 'size' must be [height, width], got {str(size)[:60]}")
    return int(size[0]), int(size[1])


def rle_to_mask(rle: dict, *, backend: Backend = "auto") -> np.ndarray:
    """The (H, W) bool mask of a compressed (counts str / bytes) or uncompressed (counts list) RLE."""
    h, w = rle_size(rle)
    counts = rle["counts"]
    mask_api = _backend(backend)
    if isinstance(counts, (str, bytes)):
        runs = string_to_counts(counts)  # decoded here too: pycocotools does not check the pixel total
        if sum(runs) != h * w:
            raise ValueError(f"compressed RLE covers {sum(runs)} pixels but its size {h}x{w} has {h * w}")
        if mask_api is not None:
            return _decode(mask_api, {"size": [h, w], "counts": counts})
        return counts_to_mask(runs, h, w)
    if not isinstance(counts, (list, tuple)):
        raise ValueError(  # noqa: TRY004 (bad file content, reported like every other format error)
            f"RLE 'counts' must be a string or a list of run lengths, got {type(counts).__name__}")
    mask = counts_to_mask(counts, h, w)  # checks the runs
    if mask_api is not None:
        return _decode(mask_api, mask_api.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w))
    return mask


def segmentation_to_mask(segmentation: Any, height: int, width: int, *, backend: Backend = "auto") -> np.ndarray:
    """A COCO annotation's `segmentation` (polygons or either RLE) as an (H, W) bool mask; an RLE whose
    size is not (height, width) raises."""
    if isinstance(segmentation, dict):
        size = rle_size(segmentation)
        if size != (height, width):
            raise ValueError(f"mask size {size[1]}x{size[0]} does not match the image size {width}x{height}")
        return rle_to_mask(segmentation, backend=backend)
    return polygons_to_mask(segmentation, height, width, backend=backend)


def mask_to_rle(mask: np.ndarray, *, backend: Backend = "auto") -> dict:
    """Compressed RLE `{"size": [h, w], "counts": str}` of an (H, W) mask (COCO result format)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    mask_api = _backend(backend)
    if mask_api is not None:
        rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(mask_to_counts(mask))}

