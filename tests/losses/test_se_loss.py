"""Semantic Encoding loss (EncNet, Zhang et al., CVPR 2018): presence targets, indifference to class
areas, the ignore index, and its place in SegmentationLoss and the training config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seglab.config import TrainConfig
from seglab.errors import SeglabError
from seglab.losses.cross_entropy import SegmentationLoss
from seglab.losses.se_loss import (
    SemanticEncodingLoss,
    class_presence,
    semantic_encoding_loss,
)


def test_class_presence_hand_computed():
    target = torch.tensor([[[0, 0, 2], [2, 255, 2]],
                           [[255, 255, 255], [255, 255, 255]],
                           [[3, 1, 1], [1, 1, 1]]])
    expected = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    assert torch.equal(class_presence(target, 4), expected)
    assert torch.equal(class_presence(target.masked_fill(target == 255, 0), 4)[1], torch.tensor([1.0, 0, 0, 0]))


def test_loss_is_mean_bce_against_presence():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([[[0, 0], [2, 255]], [[1, 1], [1, 1]]])
    present = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    p = torch.sigmoid(logits)
    hand = -(present * p.log() + (1 - present) * (1 - p).log()).mean()
    torch.testing.assert_close(semantic_encoding_loss(logits, target), hand)
    torch.testing.assert_close(SemanticEncodingLoss()(torch.zeros(2, 3), target), torch.tensor(math.log(2)))


def test_only_which_classes_are_present_matters_not_their_area():
    logits = torch.randn(1, 4)
    small = torch.zeros(1, 8, 8, dtype=torch.long)
    small[0, 0, 0] = 3  # one pixel of class 3
    large = torch.full((1, 8, 8), 3)
    large[0, 0, 0] = 0  # one pixel of class 0
    assert semantic_encoding_loss(logits, small).item() == semantic_encoding_loss(logits, large).item()
    more = small.clone()
    more[0, 7, 7] = 1  # a third class present: a different target
    assert semantic_encoding_loss(logits, more).item() != semantic_encoding_loss(logits, small).item()


def test_ignore_index_marks_no_class():
    logits = torch.randn(2, 3)
    target = torch.randint(0, 3, (2, 6, 6))
    target[:, 0] = torch.tensor([0, 1, 2, 0, 1, 2])  # every class survives the masking below
    masked = target.clone()
    masked[:, 1:4] = 255
    assert semantic_encoding_loss(logits, masked).item() == semantic_encoding_loss(logits, target).item()
    custom = target.masked_fill(masked == 255, -1)
    assert torch.equal(class_presence(custom, 3, ignore_index=-1), class_presence(masked, 3))
    # An all-ignored image says every class is absent (not "class 255 present", not an error).
    everything = torch.full((1, 4, 4), 255)
    assert torch.equal(class_presence(everything, 3), torch.zeros(1, 3))


def test_bad_labels_and_shapes_raise():
    with pytest.raises(SeglabError, match="label 5"):
        class_presence(torch.tensor([[[0, 5]]]), 3)
    with pytest.raises(ValueError, match="SE logits"):
        semantic_encoding_loss(torch.zeros(2, 3, 1, 1), torch.zeros(2, 4, 4, dtype=torch.long))


def test_segmentation_loss_adds_weighted_se_term():
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    se = torch.randn(2, 3, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5))
    target[0, 0, 0] = 255
    out = SegmentationLoss()({"out": logits, "aux": aux, "se": se}, target)
    bce = semantic_encoding_loss(se, target)
    torch.testing.assert_close(out["loss_se"], 0.2 * bce)  # the paper's weight is the default
    torch.testing.assert_close(out["loss"], out["loss_ce"] + out["loss_aux"] + 0.2 * bce)
    out["loss"].backward()
    assert se.grad is not None and se.grad.abs().sum() > 0
    half = SegmentationLoss(se_weight=0.5)({"out": logits, "se": se}, target)
    torch.testing.assert_close(half["loss"], F.cross_entropy(logits, target, ignore_index=255) + 0.5 * bce)
    assert "loss_se" not in SegmentationLoss()({"out": logits, "aux": aux}, target)
    with pytest.raises(ValueError, match="se_weight"):
        SegmentationLoss(se_weight=-0.1)


def test_config_se_weight():
    assert TrainConfig().se_weight == 0.2
    with pytest.raises(ValueError):
        TrainConfig(se_weight=-1)
