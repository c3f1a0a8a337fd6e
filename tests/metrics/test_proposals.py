"""Average recall of segment proposals (seglab.metrics.proposals), on hand-computed cases."""
from __future__ import annotations

import pytest
import torch

from seglab.errors import SeglabError
from seglab.metrics.proposals import average_recall, best_mask_iou


def _box_mask(y0, x0, y1, x1, size=(10, 10)):
    m = torch.zeros(size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_best_mask_iou_by_hand():
    gt = torch.stack([_box_mask(0, 0, 4, 4)])
    props = torch.stack([_box_mask(0, 0, 4, 2), _box_mask(0, 0, 4, 4), _box_mask(5, 5, 9, 9)])
    assert best_mask_iou(props, gt).tolist() == [[0.5, 1.0, 0.0]]


def test_average_recall_by_hand():
    """Image 1: a 4x4 instance with proposals of IoU 0.5 (first) and 1.0 (second); image 2: a 4x4 instance
    with one proposal of IoU 12/16 = 0.75. AR@1: instance 1 recalled at t = 0.5 only (1 of 10 thresholds),
    instance 2 at t = 0.5..0.75 (6 of 10) -> (1 + 6) / 20. AR@2: instance 1 at every t -> (10 + 6) / 20."""
    gt = [torch.stack([_box_mask(0, 0, 4, 4)]), torch.stack([_box_mask(2, 2, 6, 6)])]
    props = [torch.stack([_box_mask(0, 0, 4, 2), _box_mask(0, 0, 4, 4)]), torch.stack([_box_mask(2, 2, 6, 5)])]
    ar = average_recall(props, gt, counts=(1, 2))
    assert ar["AR@1"] == pytest.approx(7 / 20)
    assert ar["AR@2"] == pytest.approx(16 / 20)


def test_no_proposals_recall_nothing_and_bad_input_raises():
    gt = [torch.stack([_box_mask(0, 0, 4, 4)])]
    assert average_recall([torch.zeros(0, 10, 10, dtype=torch.bool)], gt, counts=(10,)) == {"AR@10": 0.0}
    with pytest.raises(SeglabError, match="images"):
        average_recall([], gt)
    with pytest.raises(SeglabError, match="image size"):
        average_recall([torch.zeros(1, 5, 5, dtype=torch.bool)], gt)
