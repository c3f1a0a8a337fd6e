"""Grid search of the dense CRF's parameters on a validation split, as DeepLab did (Chen et al.,
ICLR 2015, Sec. 4.1: w1, sigma_alpha, sigma_beta searched on a held-out set with w2 = 3, sigma_gamma
= 3 fixed; here w2 and sigma_gamma are searchable too). The network's probabilities are computed once
per image and reused for every parameter setting; each setting reports mIoU and accuracy near label
boundaries (trimap), next to the network alone."""
from __future__ import annotations

import itertools

from tqdm import tqdm

from ..errors import SeglabError
from .crf import dense_crf

DEFAULT_GRID = {"bi_w": (3.0, 4.0, 5.0), "bi_xy_std": (30.0, 50.0, 80.0), "bi_rgb_std": (3.0, 5.0)}
CRF_KEYS = ("iterations", "pos_w", "pos_xy_std", "bi_w", "bi_xy_std", "bi_rgb_std")


def parse_grid(text: str | None) -> dict:
    """'bi_w=3,4,5;bi_xy_std=50,80' -> {'bi_w': (3.0, 4.0, 5.0), 'bi_xy_std': (50.0, 80.0)}."""
    if not text:
        return dict(DEFAULT_GRID)
    grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, values = part.partition("=")
        key = key.strip()
        if key not in CRF_KEYS:
            raise SeglabError(f"--grid: unknown CRF parameter {key!r} (expected one of {', '.join(CRF_KEYS)})")
        try:
            nums = tuple(int(v) if key == "iterations" else float(v) for v in values.split(","))
        except ValueError:
            raise SeglabError(f"--grid: {key} needs comma-separated numbers, got {values!r}") from None
        grid[key] = nums
    return grid


def parse_crf_params(text: str) -> dict:
    """'bi_w=5,bi_xy_std=50' -> {'bi_w': 5.0, 'bi_xy_std': 50.0} (empty -> {})."""
    params = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = item.partition("=")
        if key not in CRF_KEYS:
            raise SeglabError(f"--crf: unknown CRF parameter {key!r} (expected one of {', '.join(CRF_KEYS)})")
        try:
            params[key] = int(value) if key == "iterations" else float(value)
        except ValueError:
            raise SeglabError(f"--crf: {key} needs a number, got {value!r}") from None
    return params


def crf_grid_search(predictor, dataset, grid: dict, *, base: dict | None = None, max_images: int | None = None,
                    widths=(2, 5), progress: bool = False) -> list[dict]:
    """Rows sorted by mIoU (best first); the row with `params=None` is the network without CRF."""
    from ..metrics import SemanticMetrics
    from ..metrics.boundary import TrimapAccuracy

    keys = sorted(grid)
    settings = [None] + [{**(base or {}), **dict(zip(keys, combo))}
                         for combo in itertools.product(*(grid[k] for k in keys))]
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    sem = [SemanticMetrics(dataset.num_classes, ignore_index=dataset.ignore_index) for _ in settings]
    tri = [TrimapAccuracy(widths, ignore_index=dataset.ignore_index) for _ in settings]
    for i in tqdm(range(n), desc="crf-search", disable=not progress, dynamic_ncols=True):
        sample = dataset[i]
        probs = predictor.probabilities(sample["image"][None])[0]
        image = dataset.read_raw(i)[0]
        for s, params in enumerate(settings):
            refined = probs if params is None else dense_crf(image, probs, **params)
            pred = refined.argmax(0)
            sem[s].update(pred, sample["mask"])
            tri[s].update(pred, sample["mask"])
    rows = []
    for params, m, t in zip(settings, sem, tri):
        r = m.compute()
        rows.append({"params": params, "mIoU": r["mIoU"], "aAcc": r["aAcc"], **t.compute(), "images": n})
    return sorted(rows, key=lambda row: -row["mIoU"])
