"""Semantic segmentation metrics from one streaming confusion matrix.

Pixel accuracy, mean accuracy, mean IU and frequency-weighted IU follow Long, Shelhamer, Darrell,
"Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, Sec. 5; the Dice coefficient
(Dice, Ecology 1945) is the F1 score of each class. With n_ij the number of pixels of ground-truth
class i predicted as class j, t_i = sum_j n_ij (ground-truth pixels of class i) and p_j = sum_i n_ij
(pixels predicted as class j):

    aAcc   = sum_i n_ii / sum_i t_i                       (pixel accuracy)
    Acc_i  = n_ii / t_i          = TP / (TP + FN)          (per-class accuracy, i.e. recall)
    IoU_i  = n_ii / (t_i + p_i - n_ii) = TP / (TP + FP + FN)
    Dice_i = 2 n_ii / (t_i + p_i)      = 2TP / (2TP + FP + FN)
    mAcc, mIoU, mDice = means of the per-class values over the classes where they are defined
    fwIoU  = sum_i (t_i / sum_k t_k) IoU_i              (over the classes with ground truth)

Which classes enter the means (the same choice as mmsegmentation and torchmetrics' defaults):
- a class absent from both ground truth and prediction has no defined IoU, Acc or Dice: NaN in the
  per-class lists and left out of every mean;
- a class predicted but absent from the ground truth has IoU 0 and Dice 0, which do count in mIoU and
  mDice (false positives of a class that is not there are errors), while its Acc is NaN (no
  ground-truth pixels, so recall is undefined) and is left out of mAcc.
An empty matrix (no pixel seen yet) gives NaN everywhere.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def _as_index_tensor(x, name: str) -> torch.Tensor:
    """A tensor of integer class indices in its own dtype (no widening copy; bool becomes uint8)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {x.dtype} "
                         "(for logits take argmax over the class dimension first)")
    return x.view(torch.uint8) if x.dtype == torch.bool else x


def _max_if_nonnegative(x: torch.Tensor) -> int | None:
    """max(x) when no value is negative, else None; one pass. torch's int64 reductions are scalar code
    on CPU (about 4 ms per megapixel here), so CPU int64 goes through numpy, viewed as uint64: a negative
    value becomes >= 2^63 and one vectorised max (0.1 ms per megapixel) answers both questions."""
    if x.device.type == "cpu" and x.dtype == torch.int64:
        top = int(x.numpy().view(np.uint64).max())
        return top if top < 2 ** 63 else None
    lo, hi = torch.aminmax(x)
    return int(hi) if int(lo) >= 0 else None


# Largest histogram the fast path builds (bins of (max target + 1) * num_classes): 8 MB of int64.
_MAX_FAST_BINS = 1 << 20


def _fast_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                    ignore_index: int | None) -> torch.Tensor | None:
    """The (C, C) counts from one bincount of `target * C + pred` in a narrow integer dtype, with no
    boolean-index copy: every target value t in [0, max] gets its own row of C bins, the ignored value's
    row is dropped afterwards and rows >= C must be empty. None when the inputs are not known to be in
    range this way (negative values, a pred >= C, a stray target value, a huge target value): the caller
    then takes `_checked_confusion`, which also gives the error message."""
    c = num_classes
    if pred.numel() == 0:
        return None
    p_hi, t_hi = _max_if_nonnegative(pred), _max_if_nonnegative(target)
    if p_hi is None or p_hi >= c or t_hi is None:
        return None
    rows = t_hi + 1 if t_hi >= c else c
    bins = rows * c
    if bins > _MAX_FAST_BINS:
        return None
    dtype = torch.int16 if bins <= 2 ** 15 else torch.int32
    # Exact narrowing: all values are known to lie in [0, rows) and [0, c).
    index = target.reshape(-1).to(dtype, copy=True).mul_(c).add_(pred.reshape(-1).to(dtype))
    counts = torch.bincount(index, minlength=bins).view(rows, c)
    if ignore_index is not None and 0 <= ignore_index < rows:
        counts[ignore_index] = 0
    if rows > c and bool(counts[c:].any()):
        return None                                   # target values >= C that are not ignore_index
    return counts[:c]


def _checked_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                       ignore_index: int | None) -> torch.Tensor:
    """The simple path (int64, boolean masks): any input, a clear error for values out of range."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    c = num_classes
    for name, x in (("target", target), ("pred", pred)):
        bad = (x < 0) | (x >= c)
        if bool(bad.any()):
            values = torch.unique(x[bad])[:5].tolist()
            raise ValueError(f"{name} has values {values} outside [0, {c}) (ignore_index={ignore_index})")
    return torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


class SemanticMetrics:
    """Streaming confusion matrix (rows = ground truth, columns = prediction) and the metrics above.

    `update` per batch, `merge`/`all_reduce` to combine workers, `compute` once at the end.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred, target) -> None:
        """Add a batch: `pred` and `target` of the same shape ((N,H,W) or (H,W)) of class indices."""
        pred, target = _as_index_tensor(pred, "pred"), _as_index_tensor(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        target = target.to(pred.device)
        counts = _fast_confusion(pred, target, self.num_classes, self.ignore_index)
        if counts is None:
            counts = _checked_confusion(pred, target, self.num_classes, self.ignore_index)
        self.confusion += counts.to(self.confusion.device)

    def merge(self, other: "SemanticMetrics") -> "SemanticMetrics":
        """Add another object's counts into this one (e.g. from another worker); returns self."""
        if not isinstance(other, SemanticMetrics) or other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other!r} into SemanticMetrics(num_classes={self.num_classes})")
        self.confusion += other.confusion.to(self.confusion.device)
        return self

    def reset(self) -> None:
        self.confusion.zero_()

    def all_reduce(self) -> "SemanticMetrics":
        """Sum the matrix over all torch.distributed ranks (no-op when not initialised); returns self.

        Call it once, after the last update: a second call would count every rank's pixels again.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = torch.device("cpu")
            if dist.get_backend() == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            buf = self.confusion.to(device)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            self.confusion = buf.cpu()
        return self

    def state_dict(self) -> dict:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "confusion": self.confusion.clone()}

    def load_state_dict(self, state: dict) -> None:
        confusion = torch.as_tensor(state["confusion"], dtype=torch.int64)
        if int(state["num_classes"]) != self.num_classes or confusion.shape != self.confusion.shape:
            raise ValueError(f"state has num_classes={state['num_classes']}, "
                             f"confusion {tuple(confusion.shape)}; expected {self.num_classes}")
        self.ignore_index = state.get("ignore_index", self.ignore_index)
        self.confusion = confusion.clone()

    def compute(self) -> dict:
        """aAcc, mAcc, mIoU, fwIoU, mDice (floats in [0, 1]) and per-class lists IoU, Acc, Dice."""
        n = self.confusion.double().cpu().numpy()
        tp = np.diag(n)
        gt = n.sum(axis=1)      # TP + FN
        pred = n.sum(axis=0)    # TP + FP
        total = gt.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(gt + pred - tp > 0, tp / (gt + pred - tp), np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
            dice = np.where(gt + pred > 0, 2 * tp / (gt + pred), np.nan)
        has_gt = gt > 0
        return {
            "aAcc": float(tp.sum() / total) if total > 0 else math.nan,
            "mAcc": _nanmean(acc),
            "mIoU": _nanmean(iou),
            "fwIoU": float((gt[has_gt] / total * iou[has_gt]).sum()) if total > 0 else math.nan,
            "mDice": _nanmean(dice),
            "IoU": [float(v) for v in iou],
            "Acc": [float(v) for v in acc],
            "Dice": [float(v) for v in dice],
        }

    def format_table(self, results: dict | None = None, class_names: Sequence[str] | None = None) -> str:
        """`format_table(results, class_names)` below, defaulting to this object's `compute()`."""
        return format_table(self.compute() if results is None else results, class_names)

    def __repr__(self) -> str:
        return (f"SemanticMetrics(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"pixels={int(self.confusion.sum())})")


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def format_table(results: dict, class_names: Sequence[str] | None = None) -> str:
    """Per-class table (IoU, Acc, Dice in percent, NaN as '-') and a summary line of the means."""
    num = len(results["IoU"])
    names = [str(i) for i in range(num)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num:
        raise ValueError(f"{len(names)} class names given for {num} classes")
    width = max([5] + [len(n) for n in names])
    lines = [f"{'class':<{width}} {'IoU':>7} {'Acc':>7} {'Dice':>7}"]
    for i, name in enumerate(names):
        row = (_pct(results[k][i]) for k in ("IoU", "Acc", "Dice"))
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>7}" for v in row))
    lines.append("  ".join(f"{k} {_pct(results[k])}" for k in ("aAcc", "mAcc", "mIoU", "fwIoU", "mDice")))
    return "\n".join(lines)
