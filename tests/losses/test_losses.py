"""SegmentationLoss against torch's cross-entropy (FCN, PSPNet aux weighting) and class weights against
hand-computed values (Eigen & Fergus ICCV 2015 median frequency; ENet inverse log frequency)."""
import math

import pytest
import torch
import torch.nn.functional as F

from seglab.losses import (SegmentationLoss, count_class_pixels, inverse_log_frequency_weights,
                           median_frequency_weights)


def random_case(n=2, c=5, h=7, w=9, ignore_frac=0.2):
    logits = torch.randn(n, c, h, w, requires_grad=True)
    target = torch.randint(0, c, (n, h, w))
    target[torch.rand(n, h, w) < ignore_frac] = 255
    return logits, target


def test_equals_torch_cross_entropy_with_ignore():
    logits, target = random_case()
    out = SegmentationLoss()(logits, target)
    assert set(out) == {"loss", "loss_ce"}
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, target, ignore_index=255))


def test_class_weights_match_torch_weighted_ce():
    logits, target = random_case()
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1])
    weighted = SegmentationLoss(class_weights=weights)(logits, target)["loss"]
    torch.testing.assert_close(weighted, F.cross_entropy(logits, target, weight=weights, ignore_index=255))
    assert not torch.allclose(weighted, SegmentationLoss()(logits, target)["loss"])
    with pytest.raises(ValueError, match="class weights"):
        SegmentationLoss(class_weights=[1.0, 2.0])(logits, target)


def test_aux_outputs_weighted_and_summed():
    logits, target = random_case()
    aux1, aux2 = torch.randn_like(logits), torch.randn_like(logits)
    out = SegmentationLoss(aux_weight=0.4)({"out": logits, "aux": [aux1, aux2]}, target)
    ce = lambda x: F.cross_entropy(x, target, ignore_index=255)  # noqa: E731
    torch.testing.assert_close(out["loss_ce"], ce(logits))
    torch.testing.assert_close(out["loss_aux"], 0.4 * (ce(aux1) + ce(aux2)))
    torch.testing.assert_close(out["loss"], ce(logits) + 0.4 * ce(aux1) + 0.4 * ce(aux2))
    single = SegmentationLoss()({"out": logits, "aux": aux1}, target)
    torch.testing.assert_close(single["loss"], ce(logits) + 0.4 * ce(aux1))
    assert set(SegmentationLoss()({"out": logits}, target)) == {"loss", "loss_ce"}


def test_all_ignored_batch_is_zero_and_backward_works():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    for criterion in (SegmentationLoss(), SegmentationLoss(class_weights=[1.0, 2.0, 3.0])):
        loss = criterion({"out": logits, "aux": [logits * 2]}, target)["loss"]
        assert loss.item() == 0.0
        loss.backward()
        assert logits.grad is not None and torch.all(logits.grad == 0)
        logits.grad = None


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="target"):
        SegmentationLoss()(torch.randn(1, 3, 8, 8), torch.zeros(1, 4, 4, dtype=torch.long))


def test_median_frequency_weights_hand_computed():
    # freq = [10/100, 30/100, 60/200] = [0.1, 0.3, 0.3]; median 0.3; weights 0.3/freq = [3, 1, 1]
    w = median_frequency_weights([10, 30, 60], [100, 100, 200])
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([3.0, 1.0, 1.0]))
    # A class never present gets weight 0 and stays out of the median.
    torch.testing.assert_close(median_frequency_weights(torch.tensor([10, 0, 30, 60]), [100, 0, 100, 200]),
                               torch.tensor([3.0, 0.0, 1.0, 1.0]))


def test_count_class_pixels_feeds_median_frequency():
    # image A: classes 0 (3 px), 1 (1 px), one ignored pixel; image B: class 1 (2 px), class 2 (2 px)
    a = torch.tensor([[0, 0], [0, 1], [255, 255]])
    b = [[1, 2], [2, 1]]
    pixels, present = count_class_pixels([a, b], 4)
    assert pixels.tolist() == [3, 3, 2, 0]
    assert present.tolist() == [4, 8, 4, 0]
    with pytest.raises(ValueError):
        count_class_pixels([[[0, 5]]], 4)


def test_inverse_log_frequency_weights():
    # p = [0.25, 0.75] -> 1/ln(1.27), 1/ln(1.77)
    w = inverse_log_frequency_weights([25, 75])
    torch.testing.assert_close(w, torch.tensor([1 / math.log(1.27), 1 / math.log(1.77)]))


def test_an_aux_head_at_its_own_coarser_size_is_scored_on_the_labels_at_its_cells_centres():
    from seglab.losses.cross_entropy import downsample_labels

    target = torch.arange(16).reshape(1, 4, 4)
    # 2x2 cells of 2x2 pixels: the centre rounds to the pixel below-right of the middle (nearest-exact)
    assert downsample_labels(target, (2, 2)).tolist() == [[[5, 7], [13, 15]]]
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 12), generator=g)
    labels[0, :2] = 255
    out, aux = torch.randn(2, 3, 8, 12, generator=g), torch.randn(2, 3, 2, 3, generator=g)
    losses = SegmentationLoss(aux_weight=0.4)({"out": out, "aux": [aux]}, labels)
    coarse = downsample_labels(labels, (2, 3))
    torch.testing.assert_close(losses["loss_aux"], 0.4 * F.cross_entropy(aux, coarse, ignore_index=255))
    with pytest.raises(ValueError, match="or smaller"):
        SegmentationLoss()(torch.randn(2, 3, 9, 12), labels)  # a head larger than the labels is a mistake
