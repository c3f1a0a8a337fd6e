"""SemanticMetrics against hand-computed values (definitions: Long et al., FCN, CVPR 2015, Sec. 5)."""
import math

import numpy as np
import pytest
import torch

from seglab.metrics import SemanticMetrics, format_table

# Hand-built 3-class case, 10 labelled pixels plus 3 ignored (255) ones.
#            pred 0  pred 1  pred 2     t_i (GT pixels)
#   GT 0       3       1       0          4
#   GT 1       1       2       1          4
#   GT 2       0       0       2          2
#   p_j        4       3       3         10
CONFUSION = [[3, 1, 0], [1, 2, 1], [0, 0, 2]]
# aAcc  = (3 + 2 + 2) / 10                              = 0.7
# Acc   = 3/4, 2/4, 2/2 = 0.75, 0.5, 1.0;   mAcc = 2.25 / 3   = 0.75
# IoU_i = n_ii / (t_i + p_i - n_ii): 3/(4+4-3) = 0.6, 2/(4+3-2) = 0.4, 2/(2+3-2) = 2/3
# mIoU  = (0.6 + 0.4 + 2/3) / 3                         = 5/9
# fwIoU = 0.4 * 0.6 + 0.4 * 0.4 + 0.2 * 2/3 = 0.24 + 0.16 + 2/15 = 8/15
# Dice  = 2 n_ii / (t_i + p_i): 6/8 = 0.75, 4/7, 4/5 = 0.8
# mDice = (3/4 + 4/7 + 4/5) / 3 = (105 + 80 + 112) / 140 / 3 = 99/140
EXPECTED = {"aAcc": 0.7, "mAcc": 0.75, "mIoU": 5 / 9, "fwIoU": 8 / 15, "mDice": 99 / 140,
            "Acc": [0.75, 0.5, 1.0], "IoU": [0.6, 0.4, 2 / 3], "Dice": [0.75, 4 / 7, 0.8]}


def hand_case():
    """(pred, target) 1x1x13 maps realising CONFUSION, with three ignored pixels."""
    pairs = [(t, p) for t, row in enumerate(CONFUSION) for p, n in enumerate(row) for _ in range(n)]
    pairs += [(255, 0), (255, 2), (255, 1)]
    target = torch.tensor([t for t, _ in pairs]).view(1, 1, -1)
    pred = torch.tensor([p for _, p in pairs]).view(1, 1, -1)
    return pred, target


def assert_results_equal(got, want):
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


def test_hand_computed_three_classes_and_ignore():
    m = SemanticMetrics(3)
    m.update(*hand_case())
    assert m.confusion.dtype == torch.int64
    assert m.confusion.tolist() == CONFUSION       # the 3 ignored pixels are not counted
    res = m.compute()
    assert_results_equal(res, EXPECTED)
    assert all(type(res[k]) is float for k in ("aAcc", "mAcc", "mIoU", "fwIoU", "mDice"))


def test_absent_class_is_nan_and_left_out_of_means():
    m = SemanticMetrics(4)          # class 3 appears neither in GT nor in prediction
    m.update(*hand_case())
    res = m.compute()
    for key in ("IoU", "Acc", "Dice"):
        assert math.isnan(res[key][3])
        assert res[key][:3] == pytest.approx(EXPECTED[key])
    for key in ("aAcc", "mAcc", "mIoU", "fwIoU", "mDice"):
        assert res[key] == pytest.approx(EXPECTED[key])


def test_predicted_only_class_has_iou_zero_counted_in_miou():
    # GT [0, 0, 1, 1], pred [0, 2, 1, 1]: class 2 is predicted but never in the GT.
    m = SemanticMetrics(3)
    m.update(np.array([[0, 2, 1, 1]]), np.array([[0, 0, 1, 1]]))
    res = m.compute()
    # IoU: 1/(2+1-1) = 0.5, 2/2 = 1, 0/(0+1-0) = 0 -> mIoU = 1.5/3 = 0.5
    assert res["IoU"] == pytest.approx([0.5, 1.0, 0.0])
    assert res["mIoU"] == pytest.approx(0.5)
    # Acc: 1/2, 2/2, undefined -> mAcc over two classes = 0.75
    assert res["Acc"][:2] == pytest.approx([0.5, 1.0]) and math.isnan(res["Acc"][2])
    assert res["mAcc"] == pytest.approx(0.75)
    # Dice: 2/3, 1, 0 -> mDice = 5/9; fwIoU only over GT classes: 0.5*0.5 + 0.5*1 = 0.75
    assert res["mDice"] == pytest.approx(5 / 9)
    assert res["fwIoU"] == pytest.approx(0.75)


def test_empty_matrix_is_all_nan():
    res = SemanticMetrics(2).compute()
    assert all(math.isnan(res[k]) for k in ("aAcc", "mAcc", "mIoU", "fwIoU", "mDice"))
    assert all(math.isnan(v) for k in ("IoU", "Acc", "Dice") for v in res[k])


def test_merge_of_halves_equals_one_pass():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (4, 16, 16), generator=g)
    target[target == 4] = 255
    pred = torch.randint(0, 4, (4, 16, 16), generator=g)
    whole, a, b = SemanticMetrics(4), SemanticMetrics(4), SemanticMetrics(4)
    whole.update(pred, target)
    a.update(pred[:2], target[:2])
    b.update(pred[2:].numpy(), target[2:].numpy())
    assert a.merge(b) is a
    assert torch.equal(a.confusion, whole.confusion)
    assert a.compute() == whole.compute()
    with pytest.raises(ValueError):
        a.merge(SemanticMetrics(5))


def test_out_of_range_values_raise():
    m = SemanticMetrics(3)
    with pytest.raises(ValueError, match="target"):
        m.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 1], [3, 0]]))
    with pytest.raises(ValueError, match="pred"):
        m.update(torch.tensor([[0, 1], [-1, 0]]), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="argmax"):
        m.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    assert m.confusion.sum() == 0


def naive_metrics(pred, target, num_classes, ignore_index=255):
    """Independent per-class loop over boolean masks."""
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    iou, acc, dice, freq = [], [], [], []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (target == c))
        fp = np.sum((pred == c) & (target != c))
        fn = np.sum((pred != c) & (target == c))
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        acc.append(tp / (tp + fn) if tp + fn else np.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan)
        freq.append((tp + fn) / target.size)
    fw = sum(f * i for f, i in zip(freq, iou) if f > 0)
    return {"aAcc": np.mean(pred == target), "mAcc": np.nanmean(acc), "mIoU": np.nanmean(iou),
            "fwIoU": fw, "mDice": np.nanmean(dice), "IoU": iou, "Acc": acc, "Dice": dice}


def test_matches_naive_loop_on_random_data():
    rng = np.random.default_rng(0)
    num_classes = 6
    m = SemanticMetrics(num_classes)
    preds, targets = [], []
    for _ in range(3):
        target = rng.integers(0, num_classes - 1, (2, 17, 23))      # class 5 never in GT
        target[rng.random(target.shape) < 0.1] = 255
        pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes, target.shape))
        pred[target == 255] = 0
        m.update(torch.from_numpy(pred), torch.from_numpy(target))
        preds.append(pred)
        targets.append(target)
    want = naive_metrics(np.concatenate(preds), np.concatenate(targets), num_classes)
    assert_results_equal(m.compute(), want)


def test_state_dict_reset_and_table():
    m = SemanticMetrics(4)
    m.update(*hand_case())
    other = SemanticMetrics(4)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.confusion, m.confusion)
    assert m.all_reduce() is m                       # no process group: no-op
    assert torch.equal(other.confusion, m.confusion)
    table = format_table(m.compute(), ["road", "car", "person", "sky"])
    lines = table.splitlines()
    assert lines[1].split() == ["road", "60.00", "75.00", "75.00"]
    assert lines[4].split() == ["sky", "-", "-", "-"]
    assert "mIoU 55.56" in lines[-1] and "aAcc 70.00" in lines[-1] and "fwIoU 53.33" in lines[-1]
    assert m.format_table(class_names=["a", "b", "c", "d"]).splitlines()[-1] == lines[-1]
    m.reset()
    assert m.confusion.sum() == 0


def test_trimap_accuracy_counts_only_pixels_near_label_boundaries():
    from seglab.metrics.boundary import TrimapAccuracy, boundary_band

    target = torch.zeros(8, 8, dtype=torch.long)
    target[:, 4:] = 1                                     # one vertical edge between columns 3 and 4
    band = boundary_band(target, 1)
    assert band[:, 3:5].all() and band.sum() == 16
    pred = target.clone()
    pred[:, 0] = 1                                        # wrong far from the edge: not counted
    pred[0, 3] = 1                                        # wrong inside the 1-px band
    trimap = TrimapAccuracy(widths=(1,))
    trimap.update(pred, target)
    assert trimap.compute()["trimap_acc@1px"] == pytest.approx(15 / 16)


def random_case(rng, shape, num_classes, dtype, ignore_index, stray_pred_under_ignore=False):
    target = rng.integers(0, num_classes, shape)
    if ignore_index is not None:
        target[rng.random(shape) < 0.2] = ignore_index
    pred = np.where(rng.random(shape) < 0.7, target, rng.integers(0, num_classes, shape))
    pred = np.where((pred < 0) | (pred >= num_classes), 0, pred)
    if stray_pred_under_ignore:
        pred[target == ignore_index] = num_classes + 7          # ignored pixels: never checked
    return torch.from_numpy(pred).to(dtype), torch.from_numpy(target).to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("num_classes, ignore_index", [(19, 255), (6, None), (4, 2), (150, 255), (5, -1),
                                                       (3, 40000)])
def test_fast_confusion_equals_the_checked_path(dtype, num_classes, ignore_index):
    """The narrow-dtype bincount (or its fallback) gives the same matrix as the int64 boolean-mask path."""
    from seglab.metrics.semantic import _checked_confusion

    if ignore_index is not None and (ignore_index < 0 and dtype == torch.uint8 or ignore_index > 255
                                     and dtype in (torch.uint8, torch.int16)):
        pytest.skip("ignore_index not representable in this dtype")
    rng = np.random.default_rng(num_classes)
    for stray in ([False, True] if ignore_index is not None else [False]):
        pred, target = random_case(rng, (2, 31, 37), num_classes, dtype, ignore_index, stray)
        before = (pred.clone(), target.clone())
        m = SemanticMetrics(num_classes, ignore_index=ignore_index)
        m.update(pred, target)
        want = _checked_confusion(pred, target, num_classes, ignore_index)
        assert torch.equal(m.confusion, want)
        assert want.sum() == (target.numel() if ignore_index is None else (target != ignore_index).sum())
        assert torch.equal(pred, before[0]) and torch.equal(target, before[1])   # inputs untouched


def test_fast_path_takes_bool_numpy_and_noncontiguous_inputs():
    from seglab.metrics.semantic import _checked_confusion, _fast_confusion

    rng = np.random.default_rng(3)
    pred, target = random_case(rng, (40, 30), 2, torch.int64, 255)
    m = SemanticMetrics(2)
    m.update(pred.t(), target.t())                       # transposed views
    m.update(pred.numpy().astype(np.uint8), target.numpy().astype(np.uint8))
    m.update(pred.bool() & (target != 255), target.clamp_max(1).bool())
    want = (2 * _checked_confusion(pred, target, 2, 255)
            + _checked_confusion((pred.bool() & (target != 255)).long(), target.clamp_max(1), 2, 255))
    assert torch.equal(m.confusion, want)
    assert _fast_confusion(pred, target, 2, 255) is not None   # these cases do take the fast path


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_fast_path_still_raises_the_checked_error(dtype):
    m = SemanticMetrics(19)
    target = torch.full((4, 5), 3, dtype=dtype)
    pred = torch.zeros(4, 5, dtype=dtype)
    target[1, 2], target[0, 0] = 19, 255                     # 255 ignored, 19 out of range
    with pytest.raises(ValueError, match=r"target has values \[19\] outside \[0, 19\) \(ignore_index=255\)"):
        m.update(pred, target)
    target[1, 2] = 0
    pred[2, 2] = 200
    with pytest.raises(ValueError, match=r"pred has values \[200\] outside \[0, 19\)"):
        m.update(pred, target)
    if dtype == torch.int64:
        pred[2, 2], target[3, 3] = 0, 2 ** 40                # too wide for the fast histogram
        with pytest.raises(ValueError, match=r"target has values \[1099511627776\]"):
            m.update(pred, target)
    assert m.confusion.sum() == 0
