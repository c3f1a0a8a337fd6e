"""SGN's grouping steps on a cell grid: Liu, Jia, Fidler & Urtasun, "SGN: Sequential Grouping Networks for
Instance Segmentation", ICCV 2017 (Sec. 3.2 line segments from breakpoints, Sec. 3.3 merging them into
instances).

- Line segments: along every row, the foreground cells are cut into segments wherever the class changes
  or a horizontal breakpoint says "a new instance starts here" (the first cell of a row always starts
  one). Each segment is (row, x1, x2, class) with cells x1 .. x2 - 1.
- Merge candidates: two segments of consecutive rows and one class that overlap in x. The evidence that
  they belong to one instance is the vertical breakpoint map on the overlap: a cell (r + 1, x) whose
  vertical breakpoint is off continues the column's segment from (r, x).
- Grouping: candidate pairs are merged greedily, best score first, as long as the score exceeds the
  threshold (union-find), and every resulting group is an instance. `group_segments` takes the pair
  scores from any source: SGN's MergerNet (`seglab.heads.instance.sgn`), or, for perfect breakpoints,
  `breakpoint_merge_scores` (1 - mean vertical breakpoint on the overlap), which recovers the instances.
Grids are numpy arrays; rows are the first axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SeglabError

__all__ = ["LineSegments", "breakpoint_merge_scores", "ground_truth_breakpoints", "group_segments",
           "line_segments", "merge_candidates"]


@dataclass
class LineSegments:
    """`ids` (H, W) segment index per cell (-1 on background); per segment `row`, `x1`, `x2` (end
    exclusive) and `label` (class)."""
    ids: np.ndarray
    row: np.ndarray
    x1: np.ndarray
    x2: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def ground_truth_breakpoints(instance_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical breakpoints (H, W) bool of an instance-id map (0 background): a
    foreground cell whose left (resp. upper) neighbour is another id or lies outside the grid."""
    ids = np.asarray(instance_map)
    fg = ids > 0
    horizontal = fg.copy()
    horizontal[:, 1:] = fg[:, 1:] & (ids[:, 1:] != ids[:, :-1])
    vertical = fg.copy()
    vertical[1:] = fg[1:] & (ids[1:] != ids[:-1])
    return horizontal, vertical


def line_segments(classes: np.ndarray, horizontal_starts: np.ndarray) -> LineSegments:
    """Line segments of a (H, W) class map (0 background) cut at the (H, W) bool horizontal breakpoints."""
    classes = np.asarray(classes)
    if classes.shape != horizontal_starts.shape:
        raise SeglabError(f"class map {classes.shape} and breakpoints {horizontal_starts.shape} differ in size")
    height, width = classes.shape
    fg = classes > 0
    new = fg & np.asarray(horizontal_starts, dtype=bool)
    new[:, 0] = fg[:, 0]
    new[:, 1:] |= fg[:, 1:] & (classes[:, 1:] != classes[:, :-1])
    ids = np.cumsum(new.reshape(-1)).reshape(height, width) - 1
    ids = np.where(fg, ids, -1)
    count = int(new.sum())
    rows, cols = np.nonzero(fg)
    seg = ids[rows, cols]
    row = np.zeros(count, dtype=np.int64)
    row[seg] = rows
    x1 = np.full(count, width, dtype=np.int64)
    np.minimum.at(x1, seg, cols)
    x2 = np.zeros(count, dtype=np.int64)
    np.maximum.at(x2, seg, cols + 1)
    label = np.zeros(count, dtype=np.int64)
    label[seg] = classes[rows, cols]
    return LineSegments(ids, row, x1, x2, label)


def merge_candidates(segments: LineSegments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of a grid's segments: ((P, 2) (upper, lower) segment pairs that touch vertically
    and share a class, (P,) their overlap in cells, (M, 3) the overlap cells as (pair index, row, column)
    of the lower cell)."""
    if len(segments) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    ids = segments.ids
    upper, lower = ids[:-1], ids[1:]
    touching = (upper >= 0) & (lower >= 0) & (upper != lower)
    touching &= segments.label[np.maximum(upper, 0)] == segments.label[np.maximum(lower, 0)]
    a, b = upper[touching], lower[touching]
    if a.size == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    pairs, inverse, counts = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True, return_counts=True)
    rows, cols = np.nonzero(touching)
    cells = np.stack([rows + 1, cols], 1)  # the lower cell of every touching column
    return pairs, counts, np.concatenate([inverse.reshape(-1, 1), cells], 1)


def breakpoint_merge_scores(pairs: np.ndarray, cells: np.ndarray, vertical_breakpoints: np.ndarray) -> np.ndarray:
    """Per candidate pair: 1 - the mean vertical breakpoint probability over its overlap cells."""
    values = np.asarray(vertical_breakpoints, dtype=np.float64)[cells[:, 1], cells[:, 2]]
    sums = np.bincount(cells[:, 0], weights=values, minlength=len(pairs))
    counts = np.bincount(cells[:, 0], minlength=len(pairs)).clip(min=1)
    return 1.0 - sums / counts


def group_segments(num_segments: int, pairs: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(S,) group index 0..G-1 of every segment: pairs merged best-first while score > threshold."""
    parent = np.arange(num_segments)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for k in np.argsort(-np.asarray(scores), kind="stable").tolist():
        if scores[k] <= threshold:
            break
        ra, rb = find(int(pairs[k, 0])), find(int(pairs[k, 1]))
        if ra != rb:
            parent[rb] = ra
    roots = np.array([find(i) for i in range(num_segments)], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1].reshape(-1) if num_segments else roots
