"""OHEM cross-entropy: only hard pixels count, but never fewer than the minimum kept."""
import math

import pytest
import torch
import torch.nn.functional as F

from seglab.losses import SegmentationLoss


def _logits_for(prob_true: torch.Tensor) -> torch.Tensor:
    """Two-class logits (1, 2, 1, N) whose softmax gives class 0 the probabilities `prob_true`."""
    logit = torch.log(prob_true / (1 - prob_true))
    return torch.stack([logit, torch.zeros_like(logit)])[None, :, None, :]


def test_ohem_averages_only_pixels_below_the_threshold():
    probs = torch.tensor([0.95, 0.9, 0.6, 0.3, 0.2, 0.99, 0.5, 0.8])
    logits, target = _logits_for(probs), torch.zeros(1, 1, 8, dtype=torch.long)
    loss = SegmentationLoss(ohem_thresh=0.7, ohem_min_kept=1 / 8)(logits, target)["loss"]
    hard = probs[probs < 0.7]
    assert loss.item() == pytest.approx((-hard.log()).mean().item(), rel=1e-5)
    plain = SegmentationLoss()(logits, target)["loss"]
    assert loss.item() > plain.item()  # easy pixels no longer dilute the mean


def test_ohem_keeps_the_hardest_min_kept_when_few_are_hard():
    probs = torch.tensor([0.95, 0.9, 0.6, 0.99, 0.98, 0.97, 0.96, 0.8])
    logits, target = _logits_for(probs), torch.zeros(1, 1, 8, dtype=torch.long)
    loss = SegmentationLoss(ohem_thresh=0.7, ohem_min_kept=0.5)(logits, target)["loss"]
    hardest = probs.sort().values[:4]  # 0.6, 0.8, 0.9, 0.95
    assert loss.item() == pytest.approx((-hardest.log()).mean().item(), rel=1e-5)


def test_ohem_skips_ignored_pixels_and_backpropagates_only_kept_ones():
    probs = torch.tensor([0.1, 0.2, 0.95, 0.99])
    logits = _logits_for(probs).requires_grad_()
    target = torch.tensor([[[255, 0, 0, 0]]])
    loss = SegmentationLoss(ohem_thresh=0.7, ohem_min_kept=0.25)(logits, target)["loss"]
    assert loss.item() == pytest.approx(-math.log(0.2), rel=1e-5)
    loss.backward()
    touched = logits.grad.abs().sum(dim=1)[0, 0] > 0
    assert touched.tolist() == [False, True, False, False]


def test_ohem_with_threshold_one_and_no_weights_equals_plain_ce():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 5, 7), torch.randint(0, 3, (2, 5, 7))
    loss = SegmentationLoss(ohem_thresh=1.0)(logits, target)["loss"]
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)


def test_ohem_all_ignored_gives_zero_and_bad_threshold_is_refused():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = SegmentationLoss(ohem_thresh=0.7)(logits, torch.full((1, 4, 4), 255))["loss"]
    loss.backward()
    assert loss.item() == 0.0
    with pytest.raises(ValueError, match="ohem_thresh"):
        SegmentationLoss(ohem_thresh=1.5)
