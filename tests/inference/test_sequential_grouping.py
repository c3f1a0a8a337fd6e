"""SGN's grouping (seglab.inference.sequential_grouping): line segments by hand, and perfect breakpoints
give back the instances, touching instances of one class and non-convex shapes included."""
from __future__ import annotations

import numpy as np

from seglab.inference.sequential_grouping import (
    breakpoint_merge_scores,
    ground_truth_breakpoints,
    group_segments,
    line_segments,
    merge_candidates,
)


def test_line_segments_by_hand():
    classes = np.array([[0, 1, 1, 1, 2, 2],
                        [1, 1, 0, 1, 1, 1]])
    starts = np.zeros_like(classes, dtype=bool)
    starts[1, 4] = True  # a breakpoint inside a run of class 1
    seg = line_segments(classes, starts)
    assert seg.ids.tolist() == [[-1, 0, 0, 0, 1, 1], [2, 2, -1, 3, 4, 4]]
    assert seg.row.tolist() == [0, 0, 1, 1, 1] and seg.label.tolist() == [1, 2, 1, 1, 1]
    assert seg.x1.tolist() == [1, 4, 0, 3, 4] and seg.x2.tolist() == [4, 6, 2, 4, 6]
    pairs, counts, cells = merge_candidates(seg)
    assert pairs.tolist() == [[0, 2], [0, 3]] and counts.tolist() == [1, 1]  # (0, 4) differ in class
    assert sorted(map(tuple, cells[:, 1:].tolist())) == [(1, 1), (1, 3)]


def _group(instance_map: np.ndarray, class_of: dict[int, int]) -> np.ndarray:
    classes = np.vectorize(lambda k: class_of.get(k, 0))(instance_map)
    horizontal, vertical = ground_truth_breakpoints(instance_map)
    segments = line_segments(classes, horizontal)
    pairs, _, cells = merge_candidates(segments)
    groups = group_segments(len(segments), pairs, breakpoint_merge_scores(pairs, cells, vertical))
    return np.where(segments.ids >= 0, groups[np.clip(segments.ids, 0, None)] + 1, 0)


def _same_partition(found: np.ndarray, truth: np.ndarray) -> bool:
    pairs = set(zip(found.reshape(-1).tolist(), truth.reshape(-1).tolist()))
    return len(pairs) == len(np.unique(found)) == len(np.unique(truth))


def test_perfect_breakpoints_give_back_the_instances():
    """Side-by-side and stacked instances of class 1 that touch, a U-shaped instance (two segments per row
    joined only at its bottom), and an instance of class 2 touching one of class 1."""
    ids = np.zeros((14, 16), dtype=np.int64)
    ids[0:4, 0:4], ids[0:4, 4:8] = 1, 2  # side by side, class 1
    ids[4:7, 0:8] = 3  # below both, class 1
    ids[0:6, 10:16] = 4  # U shape, class 1
    ids[0:4, 12:14] = 0
    ids[8:12, 2:12] = 5  # class 2
    ids[12:14, 2:12] = 6  # class 1, touching 5 from below
    found = _group(ids, {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1})
    assert _same_partition(found, ids)


def test_without_breakpoints_touching_instances_of_one_class_merge():
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[0:3, 0:4], ids[0:3, 4:8], ids[3:6, 0:8] = 1, 2, 3
    classes = (ids > 0).astype(np.int64)
    segments = line_segments(classes, np.zeros_like(classes, dtype=bool))
    pairs, _, cells = merge_candidates(segments)
    groups = group_segments(len(segments), pairs, breakpoint_merge_scores(pairs, cells, np.zeros_like(ids)))
    assert len(np.unique(groups)) == 1


def test_an_empty_grid_has_no_segments_and_no_candidates():
    segments = line_segments(np.zeros((3, 4), dtype=np.int64), np.zeros((3, 4), dtype=bool))
    pairs, counts, cells = merge_candidates(segments)
    assert len(segments) == 0 and pairs.shape == (0, 2) and cells.shape == (0, 3)
    assert group_segments(0, pairs, np.zeros(0)).size == 0
