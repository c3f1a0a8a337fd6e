"""Diagnostic plots: the confusion matrix of an evaluation and the curves of a training run.

The confusion matrix rows are ground truth and columns predictions, row-normalised so the diagonal
reads as per-class accuracy (Long et al., FCN, CVPR 2015, Sec. 5). matplotlib is imported inside the
functions (so `import seglab` stays fast) and every figure is drawn on its own Agg canvas: no
display is needed and pyplot's global backend and figure list are never touched.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch

from ..utils.io import atomic_path


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: str | os.PathLike, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def plot_confusion_matrix(confusion, class_names: Sequence[str], path: str | os.PathLike,
                          normalize: bool = True, *, dpi: int = 100) -> None:
    """Heat map of a (C, C) confusion matrix (rows ground truth), values printed up to 20 classes."""
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    cm = np.asarray(confusion, dtype=np.float64)
    num = len(class_names)
    if cm.shape != (num, num):
        raise ValueError(f"confusion of shape {cm.shape} does not match {num} class names")
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)   # classes without GT: 0

    side = max(4.0, 0.45 * num + 2.5)
    fig = _new_figure((side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(cm.max(), 1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(num), [str(n) for n in class_names], rotation=45, ha="right")
    ax.set_yticks(range(num), [str(n) for n in class_names])
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Ground truth")
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else " (pixels)"))
    if num <= 20:
        threshold = (1.0 if normalize else cm.max()) / 2
        for i in range(num):
            for j in range(num):
                text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    _save_png(fig, path, dpi)


def plot_training_curves(history: Sequence[dict], path: str | os.PathLike, *, dpi: int = 100,
                         metric: str = "val_mIoU") -> None:
    """Train loss (left axis) and the val `metric` in % (right axis, best epoch marked; e.g. "val_mIoU",
    "val_mask_AP") per epoch; the learning rate, when logged, in a second panel below."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    for i, row in enumerate(history):
        if "epoch" not in row or "train_loss" not in row:
            raise ValueError(f"history[{i}] needs 'epoch' and 'train_loss', got keys {sorted(row)}")
    epochs = [row["epoch"] for row in history]
    val = [(row["epoch"], 100.0 * row[metric]) for row in history
           if row.get(metric) is not None and not math.isnan(row[metric])]
    name = metric.removeprefix("val_").replace("_", " ")
    lrs = [(row["epoch"], row["lr"]) for row in history if row.get("lr") is not None]

    fig = _new_figure((7.0, 6.0 if lrs else 4.5))
    grid = fig.add_gridspec(2 if lrs else 1, 1, height_ratios=[3, 1] if lrs else [1])
    ax = fig.add_subplot(grid[0])
    ax.plot(epochs, [row["train_loss"] for row in history], color="tab:blue", marker=".", label="train loss")
    ax.set_xlabel("" if lrs else "epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax.grid(alpha=0.3)
    handles = ax.get_lines()[:]
    if val:
        ax2 = ax.twinx()
        x, y = zip(*val)
        handles += ax2.plot(x, y, color="tab:orange", marker=".", label=f"val {name} (%)")
        best = int(np.argmax(y))
        handles += ax2.plot([x[best]], [y[best]], linestyle="none", marker="*", markersize=14,
                            color="tab:red", label=f"best {y[best]:.2f}% @ epoch {x[best]}")
        ax2.axvline(x[best], color="tab:red", linestyle="--", alpha=0.4)
        ax2.set_ylabel(f"val {name} (%)", color="tab:orange")
    # Above the axes, on the topmost axes: the curves never hide it and it never hides them.
    (ax2 if val else ax).legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                                ncol=len(handles), fontsize="small", frameon=False)
    fig.suptitle("Training curves")
    if lrs:
        ax_lr = fig.add_subplot(grid[1], sharex=ax)
        x, y = zip(*lrs)
        ax_lr.plot(x, y, color="tab:green")
        if min(y) > 0:
            ax_lr.set_yscale("log")
        ax_lr.set_xlabel("epoch")
        ax_lr.set_ylabel("lr")
        ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    _save_png(fig, path, dpi)
