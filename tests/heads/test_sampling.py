"""Matcher thresholds and low-quality matches; the sampler's budget and positive fraction."""
from __future__ import annotations

import torch

from seglab.heads.instance.sampling import BalancedPositiveNegativeSampler, Matcher


def test_matcher_thresholds_and_low_quality_matches():
    iou = torch.tensor([[0.8, 0.5, 0.2, 0.1],
                        [0.1, 0.6, 0.25, 0.1]])
    strict = Matcher(0.7, 0.3)(iou)
    assert strict.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD, Matcher.BELOW_LOW_THRESHOLD]
    # ground truth 1's best prediction (column 1, IoU 0.6) is kept as a low-quality match
    low_quality = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert low_quality.tolist() == [0, 1, Matcher.BELOW_LOW_THRESHOLD, Matcher.BELOW_LOW_THRESHOLD]


def test_matcher_without_ground_truth_is_all_background():
    assert Matcher(0.5, 0.5)(torch.zeros(0, 3)).tolist() == [-1, -1, -1]


def test_sampler_respects_budget_and_fraction():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 50 + [0] * 100 + [-1] * 10)
    pos, neg = BalancedPositiveNegativeSampler(64, 0.25)([labels])
    assert int(pos[0].sum()) == 16 and int(neg[0].sum()) == 48
    assert bool((labels[pos[0].bool()] == 1).all()) and bool((labels[neg[0].bool()] == 0).all())
    # few positives: the rest of the budget goes to negatives
    pos, neg = BalancedPositiveNegativeSampler(64, 0.25)([torch.tensor([1, 1] + [0] * 100)])
    assert int(pos[0].sum()) == 2 and int(neg[0].sum()) == 62


def test_low_quality_matching_ignores_a_box_that_overlaps_nothing():
    iou = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou).tolist() == [0, -1, -1]
