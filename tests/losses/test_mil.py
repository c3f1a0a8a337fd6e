"""MIL-FCN's multi-class MIL loss: hand-computed value, and it only rewards the classes in the image label."""
from __future__ import annotations

import math

import pytest
import torch

from seglab.losses.mil import MILLoss, multiclass_mil_loss

# One image, 3 classes, a 2x2 map; class 0 peaks at (0, 0), class 2 at (1, 1) (no ties).
LOGITS = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]],
                        [[0.0, 1.0], [3.0, 0.0]],
                        [[0.0, 0.5], [0.0, 2.5]]]])
LABELS = torch.tensor([[1.0, 0.0, 1.0]])  # classes 0 and 2 present, class 1 absent


def _softmax_at(values: list[float], k: int) -> float:
    return math.exp(values[k]) / sum(math.exp(v) for v in values)


def test_value_on_a_2x2_map_matches_the_hand_computation():
    # class 0: best pixel (0, 0) with logits (2, 0, 0); class 2: best pixel (1, 1) with logits (1, 0, 2.5)
    p0 = _softmax_at([2.0, 0.0, 0.0], 0)
    p2 = _softmax_at([1.0, 0.0, 2.5], 2)
    assert max(_softmax_at([0.0, 1.0, 0.5], 2), _softmax_at([0.0, 3.0, 0.0], 2)) < p2  # (1, 1) is the argmax
    expected = -(math.log(p0) + math.log(p2)) / 2
    out = MILLoss()(LOGITS, LABELS)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["loss_mil"].item() == pytest.approx(expected, rel=1e-6)


def test_gradient_reaches_only_present_classes_at_their_argmax_pixel():
    log_probs = torch.log_softmax(LOGITS, dim=1).requires_grad_()
    multiclass_mil_loss(log_probs, LABELS).backward()
    grad = log_probs.grad[0]
    expected = torch.zeros_like(grad)
    expected[0, 0, 0] = expected[2, 1, 1] = -0.5  # -1/|L_I| at (x_l, y_l) of each present class
    assert torch.equal(grad, expected)  # absent class 1 and every other pixel: exactly zero


def test_absent_classes_are_only_pushed_down_never_rewarded():
    logits = torch.randn(2, 5, 7, 9).requires_grad_()
    labels = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1.0, 0, 0, 0]])
    MILLoss()(logits, labels)["loss"].backward()
    grad = logits.grad
    absent = labels == 0
    assert (grad[absent] >= 0).all()  # a gradient step can only lower an absent class's logits
    for n, l in labels.nonzero().tolist():  # each present class is raised at its own max pixel
        flat = torch.log_softmax(logits.detach(), 1)[n, l].flatten().argmax()
        assert grad[n, l].flatten()[flat] < 0
    touched = grad.abs().sum(1) > 0  # (N, H, W): pixels with any gradient
    assert touched.sum(dim=(1, 2)).tolist() == [2, 1]  # one pixel per present class (these have no ties)


def test_loss_ignores_scores_of_absent_classes_away_from_the_argmax_pixels():
    logits = torch.randn(1, 4, 6, 6)
    labels = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    base = MILLoss()(logits, labels)["loss"]
    changed = logits.clone()
    best = torch.log_softmax(logits, 1)[0, 1].flatten().argmax()
    mask = torch.ones(36, dtype=torch.bool)
    mask[best] = False
    # raising an absent class away from the chosen pixel only lowers the present class there: no change
    changed[0, 0].view(-1)[mask] += 5.0
    assert MILLoss()(changed, labels)["loss"].item() == pytest.approx(base.item(), rel=1e-6)
    raised = logits.clone()
    raised[0, 0].view(-1)[best] += 3.0  # competition at the chosen pixel does count
    assert MILLoss()(raised, labels)["loss"] > base


def test_images_without_labels_are_left_out_and_aux_heads_are_weighted():
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    alone = MILLoss()(logits[:1], labels[:1])["loss"]
    assert MILLoss()(logits, labels)["loss"].item() == pytest.approx(alone.item())
    empty = torch.randn(1, 3, 4, 4, requires_grad=True)
    zero = MILLoss()(empty, torch.zeros(1, 3))["loss"]
    zero.backward()
    assert zero.item() == 0 and torch.equal(empty.grad, torch.zeros_like(empty))
    aux = torch.randn(2, 3, 4, 4)
    out = MILLoss(aux_weight=0.25)({"out": logits, "aux": [aux]}, labels)
    assert out["loss_aux"].item() == pytest.approx(0.25 * MILLoss()(aux, labels)["loss"].item())
    assert out["loss"].item() == pytest.approx(out["loss_mil"].item() + out["loss_aux"].item())


def test_label_shape_mismatch_raises():
    with pytest.raises(ValueError, match="multi-hot labels of shape"):
        MILLoss()(torch.randn(2, 3, 4, 4), torch.ones(2, 4))
