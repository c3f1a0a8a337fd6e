"""Panoptic FPN's heuristic merge, checked by hand on a 6 x 8 image."""
from __future__ import annotations

import pytest
import torch

from seglab.errors import SeglabError
from seglab.inference.panoptic_fusion import panoptic_fpn_merge
from seglab.structures import InstanceResult

H, W = 6, 8


def instances(masks: list[torch.Tensor], scores: list[float], labels: list[int]) -> InstanceResult:
    stacked = torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool)
    return InstanceResult(boxes=torch.zeros(len(masks), 4), scores=torch.tensor(scores),
                          labels=torch.tensor(labels, dtype=torch.long), masks=stacked)


def rect(y0, y1, x0, x1) -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def semantic_map() -> torch.Tensor:
    # Two stuff classes (0: top half, 1: bottom half) and the "things" class 2 in columns 6..7.
    sem = torch.zeros(H, W, dtype=torch.long)
    sem[3:] = 1
    sem[:, 6:] = 2
    return sem


def test_instances_by_score_with_overlap_rule_then_stuff():
    a = rect(0, 4, 0, 4)      # 16 px, score 0.9
    b = rect(2, 6, 2, 6)      # 16 px, 4 under a (25%): takes its 12 free pixels
    c = rect(0, 3, 1, 4)      # 9 px, all under a (100%): dropped
    d = rect(5, 6, 6, 8)      # 2 px, score 0.4 < 0.5: dropped
    result = panoptic_fpn_merge(semantic_map(), instances([c, b, a, d], [0.8, 0.7, 0.9, 0.4], [0, 1, 0, 0]),
                                num_stuff=2, stuff_area_limit=0)
    seg = result.segments
    assert result.segments_info[:2] == [
        {"id": 1, "category_id": 2, "isthing": True, "area": 16, "score": pytest.approx(0.9)},
        {"id": 2, "category_id": 3, "isthing": True, "area": 12, "score": pytest.approx(0.7)},
    ]
    assert torch.equal(seg == 1, a)
    assert torch.equal(seg == 2, b & ~a)
    # Stuff on the free pixels only; the "things" class (label 2) forms no segment.
    stuff = result.segments_info[2:]
    top = (semantic_map() == 0) & ~a & ~b
    bottom = (semantic_map() == 1) & ~a & ~b
    assert stuff == [{"id": 3, "category_id": 0, "isthing": False, "area": int(top.sum())},
                     {"id": 4, "category_id": 1, "isthing": False, "area": int(bottom.sum())}]
    assert torch.equal(seg == 3, top) and torch.equal(seg == 4, bottom)
    void = seg == 0
    assert torch.equal(void, (semantic_map() == 2) & ~b)  # unclaimed "things" pixels stay void


def test_overlap_exactly_at_threshold_is_kept():
    a = rect(0, 2, 0, 4)      # 8 px
    b = rect(1, 3, 0, 4)      # 8 px, 4 under a = 0.5: not more than 0.5, kept
    result = panoptic_fpn_merge(semantic_map(), instances([a, b], [0.9, 0.8], [0, 0]), num_stuff=2,
                                stuff_area_limit=0)
    assert [s["area"] for s in result.segments_info if s["isthing"]] == [8, 4]
    strict = panoptic_fpn_merge(semantic_map(), instances([a, b], [0.9, 0.8], [0, 0]), num_stuff=2,
                                overlap_thresh=0.49, stuff_area_limit=0)
    assert [s["area"] for s in strict.segments_info if s["isthing"]] == [8]


def test_stuff_area_limit_and_no_instances():
    sem = semantic_map()
    result = panoptic_fpn_merge(sem, instances([], [], []), num_stuff=2, stuff_area_limit=18)
    # Class 0 has 18 free pixels (kept: >= limit), class 1 has 18 too, both kept; raise the limit: none.
    assert [(s["category_id"], s["area"]) for s in result.segments_info] == [(0, 18), (1, 18)]
    none = panoptic_fpn_merge(sem, instances([], [], []), num_stuff=2, stuff_area_limit=19)
    assert none.segments_info == [] and int(none.segments.abs().sum()) == 0


def test_empty_mask_is_skipped_and_shapes_checked():
    result = panoptic_fpn_merge(semantic_map(), instances([torch.zeros(H, W, dtype=torch.bool)], [0.9], [0]),
                                num_stuff=2, stuff_area_limit=0)
    assert all(not s["isthing"] for s in result.segments_info)
    with pytest.raises(SeglabError, match="do not match"):
        panoptic_fpn_merge(semantic_map(), instances([torch.ones(H, W + 1, dtype=torch.bool)], [0.9], [0]),
                           num_stuff=2)
