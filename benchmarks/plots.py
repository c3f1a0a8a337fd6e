"""What every benchmark plot ends with: labelled axes, a grid, the legend, and the PNG written."""
from __future__ import annotations

from pathlib import Path


def finish_plot(fig, ax, path: Path, *, xlabel: str, ylabel: str, legend_size: int = 8) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=legend_size)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
