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
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {x.dtype} "
                         "(for logits take argmax over the class dimension first)")
    return x.long()


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
        pred, target = pred.reshape(-1), target.to(pred.device).reshape(-1)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        c = self.num_classes
        for name, x in (("target", target), ("pred", pred)):
            bad = (x < 0) | (x >= c)
            if bool(bad.any()):
                values = torch.unique(x[bad])[:5].tolist()
                raise ValueError(f"{name} has values {values} outside [0, {c}) "
                                 f"(ignore_index={self.ignore_index})")
        counts = torch.bincount(target * c + pred, minlength=c * c)
        self.confusion += counts.reshape(c, c).to(self.confusion.device)

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
